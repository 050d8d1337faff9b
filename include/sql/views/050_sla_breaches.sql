-- Runs past their config's SLA: reported by Airflow's deadline alert (alerted_at), or seen in the
-- mirror to have taken (or to be taking) longer than the threshold since they started. Measured on
-- the run's current execution (a cleared run is timed afresh; Airflow moves the deadline with it):
-- an alert counts for it when it came after that execution was queued.
CREATE OR REPLACE VIEW `${project}.${dataset}.sla_breaches` AS
WITH alerts AS (
  SELECT r.run_key, MIN(s.detected_at) AS alerted_at
  FROM `${project}.${dataset}.pipeline_runs_current` AS r
  JOIN `${project}.${dataset}.sla_breach_events` AS s
    ON s.run_key = r.run_key AND (r.queued_at IS NULL OR s.detected_at >= r.queued_at)
  GROUP BY r.run_key
)
SELECT
  r.run_key,
  r.customer_id,
  r.config_id,
  r.dag_id,
  r.run_id,
  r.state,
  r.started_at,
  r.ended_at,
  c.sla_breach_threshold_minutes,
  TIMESTAMP_DIFF(COALESCE(r.ended_at, CURRENT_TIMESTAMP()), r.started_at, MINUTE) AS elapsed_minutes,
  a.alerted_at
FROM `${project}.${dataset}.pipeline_runs_current` AS r
JOIN `${project}.${dataset}.customer_pipeline_configs_current` AS c ON c.customer_id = r.customer_id AND c.config_id = r.config_id
LEFT JOIN alerts AS a ON a.run_key = r.run_key
WHERE c.sla_breach_threshold_minutes IS NOT NULL
  AND (
    a.alerted_at IS NOT NULL
    OR (r.started_at IS NOT NULL
        AND TIMESTAMP_DIFF(COALESCE(r.ended_at, CURRENT_TIMESTAMP()), r.started_at, MINUTE) > c.sla_breach_threshold_minutes)
  )
