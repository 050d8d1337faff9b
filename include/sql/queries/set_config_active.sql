-- Enable or pause one config of one customer (a config is identified by both ids, never config_id
-- alone). customer_pipeline_configs is an append-only version log: this appends the config's next
-- version, a copy of its current one with the new is_active, and never UPDATEs (rows the API just
-- streamed in could not be updated for ~30 minutes). One version per call, even when is_active is
-- unchanged, so the caller's audit matches the log; nothing for a missing or deleted config.
INSERT INTO `${project}.${dataset}.customer_pipeline_configs` (
  config_id, customer_id, display_name, provider, domain, pipeline_template, is_active, schedule_cron, timezone, priority,
  parameters, retry_config, max_execution_duration_minutes, sla_breach_threshold_minutes, auto_backfill_ticks, start_window_minutes, version, deleted_at,
  created_at, updated_at, created_by, updated_by
)
SELECT
  config_id, customer_id, display_name, provider, domain, pipeline_template, @is_active, schedule_cron, timezone,
  priority, parameters, retry_config, max_execution_duration_minutes, sla_breach_threshold_minutes, auto_backfill_ticks, start_window_minutes, version + 1,
  deleted_at, created_at, CURRENT_TIMESTAMP(), created_by, @updated_by
FROM `${project}.${dataset}.customer_pipeline_configs_current`
WHERE customer_id = @customer_id AND config_id = @config_id AND deleted_at IS NULL;
