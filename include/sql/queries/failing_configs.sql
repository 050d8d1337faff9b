-- Active configs whose latest finished runs failed @warn_at or more times in a row.
SELECT config_id, customer_id, consecutive_failures, last_run_time
FROM `${project}.${dataset}.pipeline_configs_status`
WHERE is_active AND consecutive_failures >= @warn_at
ORDER BY consecutive_failures DESC, config_id
