CREATE TABLE IF NOT EXISTS `${project}.${data_dataset}.observability_usage` (
  customer_id STRING NOT NULL,
  provider STRING NOT NULL,
  usage_date DATE NOT NULL,
  source STRING NOT NULL,            -- the model (OPENAI, CLAUDE) or the monitored service (GCP, AWS, AZURE)
  requests INT64 NOT NULL,
  errors INT64 NOT NULL,
  input_tokens INT64,                -- models only
  output_tokens INT64,               -- models only
  latency_ms_total FLOAT64,          -- summed over the requests
  probes INT64,                      -- services only: availability checks made
  probes_up INT64                    -- services only: checks that found the service up
)
CLUSTER BY customer_id, provider
