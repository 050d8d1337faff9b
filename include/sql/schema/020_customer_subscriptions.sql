CREATE TABLE IF NOT EXISTS `${project}.${dataset}.customer_subscriptions` (
  subscription_id STRING NOT NULL,
  customer_id STRING NOT NULL,
  plan STRING NOT NULL,              -- STARTER | PROFESSIONAL | SCALE | ENTERPRISE
  daily_run_limit INT64 NOT NULL,
  monthly_run_limit INT64 NOT NULL,
  max_concurrent_runs INT64 NOT NULL,
  valid_from TIMESTAMP NOT NULL,
  valid_until TIMESTAMP,             -- NULL: open-ended
  created_at TIMESTAMP NOT NULL,
  updated_at TIMESTAMP NOT NULL
)
CLUSTER BY customer_id
