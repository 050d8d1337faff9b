CREATE TABLE IF NOT EXISTS `${project}.${data_dataset}.compliance_daily` (
  customer_id STRING NOT NULL,
  provider STRING NOT NULL,
  framework STRING NOT NULL,
  report_date DATE NOT NULL,
  controls_passed INT64 NOT NULL,
  controls_failed INT64 NOT NULL,
  score FLOAT64,
  run_key STRING NOT NULL,
  computed_at TIMESTAMP NOT NULL
)
CLUSTER BY customer_id, provider
