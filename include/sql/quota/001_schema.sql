-- PostgreSQL (the quota ledger, not BigQuery): one row per execution of a run that started its pipeline.
CREATE TABLE IF NOT EXISTS cp_quota_reservations (
  run_key TEXT PRIMARY KEY,              -- the execution: dag_id/run_id, or dag_id/run_id#<clear_number> after
                                         -- a clear or a backfill's reprocessing; its retries reuse the row
  customer_id TEXT NOT NULL,
  usage_day DATE NOT NULL,               -- UTC day of the reservation
  usage_month DATE NOT NULL,             -- first day of that UTC month
  reserved_at TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS cp_quota_reservations_by_month ON cp_quota_reservations (customer_id, usage_month);

-- The DAGs the syncer itself paused (their config or customer must not run). The syncer unpauses
-- exactly these once they may run again, so a pause a person made in the Airflow UI is kept.
CREATE TABLE IF NOT EXISTS cp_syncer_pauses (
  dag_id TEXT PRIMARY KEY,
  paused_at TIMESTAMPTZ NOT NULL
);

-- Backfill ticks an operator exempted from the quota (POST .../backfills with count_against_quota
-- false): the decision, who made it and when. The operator takes no quota unit for a backfill run
-- of such a tick; every other run (a manual run of the same tick included) counts as always.
CREATE TABLE IF NOT EXISTS cp_quota_exemptions (
  dag_id TEXT NOT NULL,
  logical_date TIMESTAMPTZ NOT NULL,
  backfill_id INTEGER,
  decided_by TEXT NOT NULL,
  decided_at TIMESTAMPTZ NOT NULL,
  PRIMARY KEY (dag_id, logical_date)
);
