CREATE TABLE IF NOT EXISTS `${project}.${data_dataset}.security_audit_daily` (
  customer_id STRING NOT NULL,
  provider STRING NOT NULL,
  audit_date DATE NOT NULL,
  severity STRING NOT NULL,
  open_findings INT64 NOT NULL,
  run_key STRING NOT NULL,
  computed_at TIMESTAMP NOT NULL
)
CLUSTER BY customer_id, provider
