-- The failure policy's pause: one INSERT per sync round (never per run) appending a paused version
-- of each config (customer_pipeline_configs is an append-only version log: no UPDATE, see
-- include/sql/README.md). A config is (customer_id, config_id), named here by its DAG id
-- `<customer_id>.<config_id>` (neither id may hold a dot), so another customer's config with the
-- same config_id is never touched. A config already paused or deleted gets no new version.
INSERT INTO `${project}.${dataset}.customer_pipeline_configs` (
  config_id, customer_id, display_name, provider, domain, pipeline_template, is_active, schedule_cron, timezone, priority,
  parameters, retry_config, max_execution_duration_minutes, sla_breach_threshold_minutes, auto_backfill_ticks, start_window_minutes, version, deleted_at,
  created_at, updated_at, created_by, updated_by
)
SELECT
  config_id, customer_id, display_name, provider, domain, pipeline_template, FALSE, schedule_cron, timezone,
  priority, parameters, retry_config, max_execution_duration_minutes, sla_breach_threshold_minutes, auto_backfill_ticks, start_window_minutes, version + 1,
  deleted_at, created_at, CURRENT_TIMESTAMP(), created_by, 'auto-pause'
FROM `${project}.${dataset}.customer_pipeline_configs_current`
WHERE CONCAT(customer_id, '.', config_id) IN UNNEST(@dag_ids) AND is_active AND deleted_at IS NULL;
