-- One row per run (dag_id/run_id) with its latest state. Latest = newest transition; at equal times a
-- later state in the life cycle wins (RUNNING before RETRYING before a terminal state).
CREATE OR REPLACE VIEW `${project}.${dataset}.pipeline_runs_current` AS
WITH events AS (
  SELECT
    *,
    CASE state
      WHEN 'SCHEDULED' THEN 1 WHEN 'QUEUED' THEN 2 WHEN 'RUNNING' THEN 3 WHEN 'RETRYING' THEN 4
      ELSE 5
    END AS state_rank
  FROM `${project}.${dataset}.scheduled_pipeline_run_events`
),
per_run AS (
  SELECT
    run_key,
    MIN(IF(state = 'RUNNING', COALESCE(started_at, event_time), NULL)) AS first_started_at,
    MAX(try_number) AS tries,
    COUNT(*) AS transitions
  FROM events
  GROUP BY run_key
)
SELECT
  e.run_key,
  e.config_id,
  e.customer_id,
  e.dag_id,
  e.run_id,
  e.run_type,
  e.logical_date,
  e.scheduled_time,
  e.state,
  e.skip_reason,
  e.try_number,
  p.tries,
  p.transitions,
  p.first_started_at AS started_at,
  IF(e.state IN ('COMPLETED', 'FAILED', 'SKIPPED', 'TIMEOUT', 'CANCELLED'), COALESCE(e.ended_at, e.event_time), NULL) AS ended_at,
  e.duration_seconds,
  e.error_type,
  e.error_message,
  e.hostname,
  e.event_time AS state_changed_at
FROM events AS e
JOIN per_run AS p USING (run_key)
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY e.run_key ORDER BY e.event_time DESC, e.state_rank DESC) = 1
