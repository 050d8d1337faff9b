-- A config is (customer_id, config_id): every join and grouping uses both ids.
-- Configs with their informational columns derived from the mirror rather than updated per run:
-- last run time and status, and consecutive failed runs since the last success and since the config
-- last changed (re-enabling a paused config starts its count afresh). Only the customer's own
-- failures count (error_type PIPELINE or TIMEOUT, mirror.ErrorType): a platform failure (PLATFORM:
-- quota ledger down, snapshot missing, worker lost) neither counts nor resets the count, and a
-- person's mark is CANCELLED (MANUAL), not a finished run.
CREATE OR REPLACE VIEW `${project}.${dataset}.pipeline_configs_status` AS
WITH finished AS (
  SELECT customer_id, config_id, state, error_type, COALESCE(logical_date, state_changed_at) AS run_time, state_changed_at
  FROM `${project}.${dataset}.pipeline_runs_current`
  WHERE state IN ('COMPLETED', 'FAILED', 'TIMEOUT')
),
last_success AS (
  SELECT customer_id, config_id, MAX(IF(state = 'COMPLETED', run_time, NULL)) AS last_success_time
  FROM finished
  GROUP BY customer_id, config_id
),
latest AS (
  SELECT customer_id, config_id, state AS last_run_status, run_time AS last_run_time
  FROM finished
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (PARTITION BY customer_id, config_id ORDER BY run_time DESC) = 1
),
failures AS (
  SELECT f.customer_id, f.config_id, COUNT(*) AS consecutive_failures
  FROM finished AS f
  LEFT JOIN last_success AS s USING (customer_id, config_id)
  JOIN `${project}.${dataset}.customer_pipeline_configs_current` AS c USING (customer_id, config_id)
  WHERE f.state IN ('FAILED', 'TIMEOUT')
    AND f.error_type IN ('PIPELINE', 'TIMEOUT')
    AND (s.last_success_time IS NULL OR f.run_time > s.last_success_time)
    AND f.state_changed_at > c.updated_at
  GROUP BY f.customer_id, f.config_id
)
SELECT
  c.config_id,
  c.customer_id,
  c.pipeline_template,
  c.is_active,
  c.schedule_cron,
  c.timezone,
  n.next_run_time,
  l.last_run_time,
  l.last_run_status,
  COALESCE(f.consecutive_failures, 0) AS consecutive_failures
FROM `${project}.${dataset}.customer_pipeline_configs_current` AS c
LEFT JOIN latest AS l USING (customer_id, config_id)
LEFT JOIN failures AS f USING (customer_id, config_id)
LEFT JOIN `${project}.${dataset}.config_next_runs` AS n USING (customer_id, config_id)
WHERE c.deleted_at IS NULL
