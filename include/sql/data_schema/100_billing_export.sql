-- Demo pipeline data (the customers' side): raw billing exports and what cost_billing makes of them.
CREATE TABLE IF NOT EXISTS `${project}.${data_dataset}.billing_export` (
  customer_id STRING NOT NULL,
  provider STRING NOT NULL,
  usage_date DATE NOT NULL,
  service STRING NOT NULL,
  sku STRING,
  cost NUMERIC NOT NULL,
  currency STRING NOT NULL
)
CLUSTER BY customer_id, provider
