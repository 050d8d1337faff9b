-- Active configs of active customers due in the next hour (config_next_runs is rewritten by each sync).
CREATE OR REPLACE VIEW `${project}.${dataset}.pipelines_due_soon` AS
SELECT
  c.config_id,
  c.customer_id,
  c.pipeline_template,
  c.schedule_cron,
  c.timezone,
  c.priority,
  n.next_run_time,
  TIMESTAMP_DIFF(n.next_run_time, CURRENT_TIMESTAMP(), MINUTE) AS minutes_until_run
FROM `${project}.${dataset}.customer_pipeline_configs_current` AS c
JOIN `${project}.${dataset}.config_next_runs` AS n ON n.customer_id = c.customer_id AND n.config_id = c.config_id
JOIN `${project}.${dataset}.customers_current` AS cu ON cu.customer_id = c.customer_id
WHERE c.is_active AND c.deleted_at IS NULL AND cu.status = 'ACTIVE'
  AND n.next_run_time BETWEEN CURRENT_TIMESTAMP() AND TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL 1 HOUR)
