-- The latest version of every config that is not deleted: the snapshot the DAG files read.
SELECT
  config_id,
  customer_id,
  display_name,
  provider,
  domain,
  pipeline_template,
  is_active,
  schedule_cron,
  timezone,
  priority,
  TO_JSON_STRING(parameters) AS parameters,
  TO_JSON_STRING(retry_config) AS retry_config,
  max_execution_duration_minutes,
  sla_breach_threshold_minutes,
  auto_backfill_ticks,
  start_window_minutes,
  version,
  created_at,
  updated_at
FROM `${project}.${dataset}.customer_pipeline_configs_current`
WHERE deleted_at IS NULL
ORDER BY customer_id, config_id
