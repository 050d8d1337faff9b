-- Runs that took (or have been running) longer than their config's SLA threshold.
CREATE OR REPLACE VIEW `${project}.${dataset}.sla_breaches` AS
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
  TIMESTAMP_DIFF(COALESCE(r.ended_at, CURRENT_TIMESTAMP()), r.started_at, MINUTE) AS elapsed_minutes
FROM `${project}.${dataset}.pipeline_runs_current` AS r
JOIN `${project}.${dataset}.customer_pipeline_configs` AS c USING (config_id)
WHERE c.sla_breach_threshold_minutes IS NOT NULL
  AND r.started_at IS NOT NULL
  AND TIMESTAMP_DIFF(COALESCE(r.ended_at, CURRENT_TIMESTAMP()), r.started_at, MINUTE) > c.sla_breach_threshold_minutes
