-- Usage per customer, derived from the mirror (no mutable counters). Days and months are UTC, the
-- calendar the quota gate counts in. The unit is the quota ledger's: one execution of a run that
-- started its pipeline (its first RUNNING), counted on the day that execution started, whatever its
-- retries; a run cleared or reprocessed runs again and counts again (pipeline_executions).
CREATE OR REPLACE VIEW `${project}.${dataset}.customer_usage` AS
WITH runs AS (
  SELECT
    customer_id,
    state,
    skip_reason,
    started_at,
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
