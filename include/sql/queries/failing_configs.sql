-- Active configs whose latest finished runs failed @warn_at or more times in a row. Only configs
-- with a failure of their own (PIPELINE or TIMEOUT) transitioned since @since can have a count that
-- grew: that discovery reads only the newest partitions of the partitioned run table (DATE(event_time)),
-- and a round with no new failure reads nothing else. A config is (customer_id, config_id).
WITH recently_failed AS (
  SELECT DISTINCT customer_id, config_id
  FROM `${project}.${dataset}.scheduled_pipeline_runs`
  WHERE event_time >= @since
    AND state IN ('FAILED', 'TIMEOUT')
    AND error_type IN ('PIPELINE', 'TIMEOUT')
)
SELECT s.config_id, s.customer_id, s.consecutive_failures, s.last_run_time
FROM `${project}.${dataset}.pipeline_configs_status` AS s
JOIN recently_failed AS f USING (customer_id, config_id)
WHERE s.is_active AND s.consecutive_failures >= @warn_at
ORDER BY s.consecutive_failures DESC, s.customer_id, s.config_id
