-- One row per execution of a run with its latest state. An execution is one pass of a run
-- (dag_id/run_id): Airflow runs the same run_id again when a person clears it or a backfill
-- reprocesses it, and counts those clears in DagRun.clear_number, which every event carries
-- (NULL: written before it did, the first execution). Retries are tries of one execution.
-- Latest = newest transition; at equal times a later state in the life cycle wins (RUNNING before
-- RETRYING before a terminal state). Times (queued, started, ended) are this execution's own.
CREATE OR REPLACE VIEW `${project}.${dataset}.pipeline_executions` AS
WITH events AS (
  SELECT
    *,
    COALESCE(clear_number, 0) AS execution,
    CASE state
      WHEN 'SCHEDULED' THEN 1 WHEN 'QUEUED' THEN 2 WHEN 'RUNNING' THEN 3 WHEN 'RETRYING' THEN 4
      ELSE 5
    END AS state_rank
  FROM `${project}.${dataset}.scheduled_pipeline_run_events`
),
per_execution AS (
  SELECT
    run_key,
    execution,
    MIN(IF(state IN ('SCHEDULED', 'QUEUED'), event_time, NULL)) AS queued_at,
    MIN(IF(state = 'RUNNING', COALESCE(started_at, event_time), NULL)) AS first_started_at,
    MAX(try_number) AS tries,
    COUNT(*) AS transitions
  FROM events
  GROUP BY run_key, execution
),
executions_of_run AS (
  SELECT run_key, MAX(execution) AS current_execution, COUNT(*) AS executions
  FROM per_execution
  GROUP BY run_key
)
SELECT
  e.run_key,
  IF(e.execution = 0, e.run_key, CONCAT(e.run_key, '#', CAST(e.execution AS STRING))) AS execution_key,
  e.execution AS clear_number,
  e.execution = x.current_execution AS is_current,
  x.executions,
  e.config_id,
  e.customer_id,
  e.dag_id,
  e.run_id,
  -- rows written before the mirror stored the value held the Task SDK enum's name (DagRunType.BACKFILL)
  LOWER(REGEXP_REPLACE(e.run_type, r'^DagRunType[.]', '')) AS run_type,
  e.logical_date,
  e.scheduled_time,
  e.state,
  e.skip_reason,
  e.try_number,
  p.tries,
  p.transitions,
  p.queued_at,
  p.first_started_at AS started_at,
  IF(e.state IN ('COMPLETED', 'FAILED', 'SKIPPED', 'TIMEOUT', 'CANCELLED'), COALESCE(e.ended_at, e.event_time), NULL) AS ended_at,
  e.duration_seconds,
  e.error_type,
  e.error_message,
  e.hostname,
  e.event_time AS state_changed_at
FROM events AS e
JOIN per_execution AS p ON p.run_key = e.run_key AND p.execution = e.execution
JOIN executions_of_run AS x ON x.run_key = e.run_key
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY e.run_key, e.execution ORDER BY e.event_time DESC, e.state_rank DESC) = 1
