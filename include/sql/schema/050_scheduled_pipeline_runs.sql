-- Append-only: one row per state transition of a run, written by streaming inserts (never UPDATE
-- or MERGE on the hot path). event_key is deterministic for a transition, so a transition written
-- twice is one row in views/scheduled_pipeline_run_events.sql.
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.scheduled_pipeline_runs` (
  event_key STRING NOT NULL,
  run_key STRING NOT NULL,           -- dag_id/run_id: the run's identity (and idempotency key)
  config_id STRING NOT NULL,
  customer_id STRING NOT NULL,
  dag_id STRING NOT NULL,
  run_id STRING NOT NULL,
  task_id STRING,
  try_number INT64,
  clear_number INT64,                -- the execution: Airflow's DagRun.clear_number (0 first; NULL: written before it existed, = 0)
  state STRING NOT NULL,             -- SCHEDULED QUEUED RUNNING COMPLETED FAILED RETRYING SKIPPED TIMEOUT CANCELLED
  skip_reason STRING,                -- QUOTA_EXCEEDED | CUSTOMER_INACTIVE | NO_SUBSCRIPTION | CONFIG_INACTIVE
  run_type STRING,                   -- scheduled | manual | backfill | asset_triggered
  logical_date TIMESTAMP,
  scheduled_time TIMESTAMP,
  started_at TIMESTAMP,
  ended_at TIMESTAMP,
  duration_seconds FLOAT64,
  error_type STRING,                 -- PIPELINE | TIMEOUT (count toward auto-pause) | PLATFORM | MANUAL
  error_message STRING,
  hostname STRING,
  source STRING,                     -- who wrote it: operator | listener | reconciler
  details JSON,
  event_time TIMESTAMP NOT NULL,     -- when the transition happened
  recorded_at TIMESTAMP NOT NULL     -- when it reached BigQuery (later than event_time if spooled)
)
PARTITION BY DATE(event_time)
CLUSTER BY customer_id, config_id, state
