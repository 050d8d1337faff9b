CREATE TABLE IF NOT EXISTS `${project}.${data_dataset}.compliance_controls` (
  customer_id STRING NOT NULL,
  provider STRING NOT NULL,
  framework STRING NOT NULL,
  control_id STRING NOT NULL,
  check_date DATE NOT NULL,
  passed BOOL NOT NULL
)
CLUSTER BY customer_id, provider
