-- An append-only version log: each row is one version of a config (customer_id, config_id), and
-- every change (create, edit, pause, enable, delete) appends a new full row; no row is ever updated
-- (see include/sql/README.md, "Append-only tables"). Read the configs through
-- views/001_customer_pipeline_configs_current.sql, which keeps each config's latest version.
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.customer_pipeline_configs` (
  config_id STRING NOT NULL,
  customer_id STRING NOT NULL,
  display_name STRING,
  provider STRING NOT NULL,          -- GCP | AWS | AZURE | OPENAI | CLAUDE
  domain STRING NOT NULL,            -- COST | SECURITY | COMPLIANCE | OBSERVABILITY
  pipeline_template STRING NOT NULL,
  is_active BOOL NOT NULL,
  schedule_cron STRING NOT NULL,
  timezone STRING NOT NULL,
  priority INT64 NOT NULL,           -- 1 (lowest) .. 10 (highest)
  parameters JSON,
  retry_config JSON,                 -- {max_attempts, base_delay_minutes, backoff_multiplier}
  max_execution_duration_minutes INT64,
  sla_breach_threshold_minutes INT64,
  -- next_run_time, last_run_time/status and consecutive_failures are derived, not stored here:
  -- see views/pipeline_configs_status.sql (from the mirror and config_next_runs).
  version INT64 NOT NULL,            -- 1 for the created config, +1 for each later version of it
  deleted_at TIMESTAMP,              -- soft delete: set on the version that deletes the config
  created_at TIMESTAMP NOT NULL,     -- when the config was created (copied into every version)
  updated_at TIMESTAMP NOT NULL,     -- when this version was written
  created_by STRING,                 -- who created the config (copied into every version)
  updated_by STRING                  -- who wrote this version
)
CLUSTER BY customer_id, config_id
