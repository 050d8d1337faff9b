-- PostgreSQL (beside the quota ledger, not BigQuery): what the REST API must share between its
-- workers and servers, and BigQuery cannot give it cheaply.

-- Version numbers of config versions the API wrote: one row per (config, version), so two writers
-- can never both append version N of one config (the second insert conflicts: 409 or a retry).
CREATE TABLE IF NOT EXISTS cp_api_config_versions (
  customer_id TEXT NOT NULL,
  config_id TEXT NOT NULL,
  version BIGINT NOT NULL,
  claimed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (customer_id, config_id, version)
);

-- Idempotency-Key of create requests: the first answer is kept 24 h and returned to every retry.
CREATE TABLE IF NOT EXISTS cp_api_idempotency (
  scope TEXT NOT NULL,                   -- who asked, and which route
  idempotency_key TEXT NOT NULL,
  request_hash TEXT NOT NULL,            -- the same key with another body is refused
  status_code INTEGER,                   -- NULL while the first request is still running
  body JSONB,
  created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, idempotency_key)
);
CREATE INDEX IF NOT EXISTS cp_api_idempotency_by_age ON cp_api_idempotency (created_at);
