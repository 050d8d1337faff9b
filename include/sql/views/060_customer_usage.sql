-- Usage per customer, derived from the mirror (no mutable counters). Days and months are UTC, the
-- calendar the quota gate counts in. The unit is the quota ledger's: one execution of a run that
-- started its pipeline (its first RUNNING), whatever its retries; a run cleared or reprocessed runs
-- again and counts again (pipeline_executions). Its day is the ledger's (runs/quota.py): a scheduled
-- run's first execution counts on its tick's day (logical_date: a start window or a slow queue can
-- start a 23:59 tick after midnight), every other execution on the day it started. started_at here
-- is that day's moment, NULL for an execution that never started its pipeline.
CREATE OR REPLACE VIEW `${project}.${dataset}.customer_usage` AS
WITH runs AS (
  SELECT
    customer_id,
    state,
    skip_reason,
    IF(
      started_at IS NOT NULL AND run_type = 'scheduled' AND clear_number = 0 AND logical_date IS NOT NULL,
      logical_date,
      started_at
    ) AS started_at,
    state_changed_at,
    is_current
  FROM `${project}.${dataset}.pipeline_executions`
),
today AS (SELECT CURRENT_DATE() AS d)
SELECT
  c.customer_id,
  COUNTIF(DATE(r.started_at) = t.d) AS runs_today,
  COUNTIF(DATE_TRUNC(DATE(r.started_at), MONTH) = DATE_TRUNC(t.d, MONTH)) AS runs_this_month,
  COUNTIF(DATE(r.started_at) = t.d AND r.state = 'COMPLETED') AS succeeded_today,
  COUNTIF(DATE(r.started_at) = t.d AND r.state IN ('FAILED', 'TIMEOUT')) AS failed_today,
  COUNTIF(DATE(r.state_changed_at) = t.d AND r.state = 'SKIPPED' AND r.skip_reason = 'QUOTA_EXCEEDED') AS skipped_quota_today,
  COUNTIF(DATE_TRUNC(DATE(r.state_changed_at), MONTH) = DATE_TRUNC(t.d, MONTH) AND r.state = 'SKIPPED' AND r.skip_reason = 'QUOTA_EXCEEDED') AS skipped_quota_this_month,
  COUNTIF(r.is_current AND r.state IN ('RUNNING', 'RETRYING')) AS running_now
FROM `${project}.${dataset}.customers_current` AS c
CROSS JOIN today AS t
LEFT JOIN runs AS r ON r.customer_id = c.customer_id
GROUP BY c.customer_id
