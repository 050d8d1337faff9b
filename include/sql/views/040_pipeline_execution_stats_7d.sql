CREATE OR REPLACE VIEW `${project}.${dataset}.pipeline_execution_stats_7d` AS
SELECT
  r.customer_id,
  c.pipeline_template,
  COUNT(*) AS total_runs,
  COUNTIF(r.state = 'COMPLETED') AS completed_runs,
  COUNTIF(r.state IN ('FAILED', 'TIMEOUT')) AS failed_runs,
  COUNTIF(r.state = 'SKIPPED') AS skipped_runs,
  SAFE_DIVIDE(COUNTIF(r.state = 'COMPLETED'), COUNTIF(r.state IN ('COMPLETED', 'FAILED', 'TIMEOUT'))) AS success_rate,
  AVG(IF(r.state = 'COMPLETED', r.duration_seconds, NULL)) AS avg_duration_seconds
FROM `${project}.${dataset}.pipeline_runs_current` AS r
LEFT JOIN `${project}.${dataset}.customer_pipeline_configs_current` AS c USING (customer_id, config_id)
WHERE r.state_changed_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 7 DAY)
GROUP BY r.customer_id, c.pipeline_template
