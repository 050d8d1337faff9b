-- The fleet page: per customer, its active configs whose latest finished runs failed (in a row, as
-- the failure policy counts them) and the longest such streak.
SELECT customer_id, COUNT(*) AS failing_configs, MAX(consecutive_failures) AS longest_streak
FROM `${project}.${dataset}.pipeline_configs_status`
WHERE is_active AND consecutive_failures > 0
GROUP BY customer_id
