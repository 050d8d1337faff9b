-- The latest version of each config with a version written after @since (an incremental refresh of
-- the snapshot: its watermark minus an overlap), soft-deleted ones included (their latest version
-- has deleted_at set), so edits, creations and deletes all arrive. The same columns as
-- snapshot_configs.sql, plus deleted_at.
WITH changed AS (
  SELECT DISTINCT customer_id, config_id
  FROM `${project}.${dataset}.customer_pipeline_configs`
  WHERE updated_at > @since
)
SELECT
  c.config_id,
  c.customer_id,
  c.display_name,
  c.provider,
  c.domain,
  c.pipeline_template,
  c.is_active,
  c.schedule_cron,
  c.timezone,
  c.priority,
  TO_JSON_STRING(c.parameters) AS parameters,
  TO_JSON_STRING(c.retry_config) AS retry_config,
  c.max_execution_duration_minutes,
  c.sla_breach_threshold_minutes,
  c.auto_backfill_ticks,
  c.start_window_minutes,
  c.version,
  c.created_at,
  c.updated_at,
  c.deleted_at
FROM `${project}.${dataset}.customer_pipeline_configs_current` AS c
JOIN changed
  ON changed.customer_id = c.customer_id AND changed.config_id = c.config_id
ORDER BY c.customer_id, c.config_id
