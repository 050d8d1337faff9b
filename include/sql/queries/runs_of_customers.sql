-- Each run of the given customers with its current state (the mirror's view of them).
SELECT
  run_key, config_id, customer_id, dag_id, run_id, run_type, logical_date, scheduled_time, state,
  skip_reason, try_number, clear_number, started_at, ended_at
FROM `${project}.${dataset}.pipeline_runs_current`
WHERE customer_id IN UNNEST(@customer_ids)
ORDER BY dag_id, run_id
