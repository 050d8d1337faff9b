-- SLA breaches as Airflow's deadline alerts report them (one row per alert; append-only).
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.sla_breach_events` (
  run_key STRING NOT NULL,
  config_id STRING NOT NULL,
  customer_id STRING NOT NULL,
  dag_id STRING NOT NULL,
  run_id STRING NOT NULL,
  threshold_minutes INT64 NOT NULL,
  deadline_time TIMESTAMP,
  detected_at TIMESTAMP NOT NULL
)
PARTITION BY DATE(detected_at)
CLUSTER BY customer_id
