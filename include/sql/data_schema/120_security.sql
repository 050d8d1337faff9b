CREATE TABLE IF NOT EXISTS `${project}.${data_dataset}.security_findings` (
  customer_id STRING NOT NULL,
  provider STRING NOT NULL,
  finding_id STRING NOT NULL,
  severity STRING NOT NULL,          -- LOW | MEDIUM | HIGH | CRITICAL
  resource STRING,
  detected_date DATE NOT NULL,
  resolved_date DATE
)
CLUSTER BY customer_id, provider
