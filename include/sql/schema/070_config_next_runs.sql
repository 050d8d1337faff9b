-- Informational next tick of each runnable config (croniter, in the config's timezone), replaced
-- whole by each sync round with a load job (WRITE_TRUNCATE): no DML, nothing on a run's hot path.
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.config_next_runs` (
  config_id STRING NOT NULL,
  customer_id STRING NOT NULL,
  next_run_time TIMESTAMP NOT NULL,
  computed_at TIMESTAMP NOT NULL
)
CLUSTER BY customer_id
