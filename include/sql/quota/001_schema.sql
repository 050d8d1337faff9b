-- PostgreSQL (the quota ledger, not BigQuery): one row per run that started its pipeline.
CREATE TABLE IF NOT EXISTS cp_quota_reservations (
  run_key TEXT PRIMARY KEY,              -- dag_id/run_id: retries of a run reuse its reservation
  customer_id TEXT NOT NULL,
  usage_day DATE NOT NULL,               -- UTC day of the reservation
  usage_month DATE NOT NULL,             -- first day of that UTC month
  reserved_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS cp_quota_reservations_by_month ON cp_quota_reservations (customer_id, usage_month);
