-- Active configs of active customers due in the next hour (next_run_time is refreshed by the sync).
CREATE OR REPLACE VIEW `${project}.${dataset}.pipelines_due_soon` AS
SELECT
  c.config_id,
  c.customer_id,
  c.pipeline_template,
  c.schedule_cron,
  c.timezone,
  c.priority,
  c.next_run_time,
  TIMESTAMP_DIFF(c.next_run_time, CURRENT_TIMESTAMP(), MINUTE) AS minutes_until_run
FROM `${project}.${dataset}.customer_pipeline_configs` AS c
JOIN `${project}.${dataset}.customers` AS cu USING (customer_id)
WHERE c.is_active AND c.deleted_at IS NULL AND cu.status = 'ACTIVE'
  AND c.next_run_time BETWEEN CURRENT_TIMESTAMP() AND TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL 1 HOUR)
