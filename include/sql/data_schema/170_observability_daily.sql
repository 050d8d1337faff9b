CREATE TABLE IF NOT EXISTS `${project}.${data_dataset}.observability_daily` (
  customer_id STRING NOT NULL,
  provider STRING NOT NULL,
  report_date DATE NOT NULL,
  source STRING NOT NULL,
  requests INT64 NOT NULL,
  errors INT64 NOT NULL,
  error_rate FLOAT64,                -- NULL without requests
  input_tokens INT64,
  output_tokens INT64,
  avg_latency_ms FLOAT64,
  uptime FLOAT64,                    -- share of probes that found the service up; NULL without probes
  run_key STRING NOT NULL,
  computed_at TIMESTAMP NOT NULL
)
CLUSTER BY customer_id, provider
