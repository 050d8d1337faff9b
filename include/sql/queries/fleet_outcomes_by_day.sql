-- The fleet page: finished runs per UTC day over the last 7 days (all customers when @customer_id is
-- empty), for the success-rate picture. SKIPPED runs (held, over quota) are neither.
SELECT
  DATE(state_changed_at) AS day,
  COUNTIF(state = 'COMPLETED') AS completed,
  COUNTIF(state IN ('FAILED', 'TIMEOUT')) AS failed
FROM `${project}.${dataset}.pipeline_runs_current`
WHERE state_changed_at >= TIMESTAMP_SUB(TIMESTAMP(CURRENT_DATE()), INTERVAL 6 DAY)
  AND state IN ('COMPLETED', 'FAILED', 'TIMEOUT')
  AND (@customer_id = '' OR customer_id = @customer_id)
GROUP BY day
ORDER BY day
