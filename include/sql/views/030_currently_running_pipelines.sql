CREATE OR REPLACE VIEW `${project}.${dataset}.currently_running_pipelines` AS
SELECT
  r.run_key,
  r.customer_id,
  r.config_id,
  c.pipeline_template,
  r.dag_id,
  r.run_id,
  r.state,
  r.try_number,
  r.started_at,
  TIMESTAMP_DIFF(CURRENT_TIMESTAMP(), r.started_at, MINUTE) AS running_minutes,
  r.hostname
FROM `${project}.${dataset}.pipeline_runs_current` AS r
LEFT JOIN `${project}.${dataset}.customer_pipeline_configs_current` AS c USING (customer_id, config_id)
WHERE r.state IN ('QUEUED', 'RUNNING', 'RETRYING')
