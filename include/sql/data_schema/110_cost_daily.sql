CREATE TABLE IF NOT EXISTS `${project}.${data_dataset}.cost_daily` (
  customer_id STRING NOT NULL,
  provider STRING NOT NULL,
  usage_date DATE NOT NULL,
  service STRING NOT NULL,
  total_cost NUMERIC NOT NULL,
  currency STRING NOT NULL,
  line_items INT64 NOT NULL,
  run_key STRING NOT NULL,
  computed_at TIMESTAMP NOT NULL
)
CLUSTER BY customer_id, provider
