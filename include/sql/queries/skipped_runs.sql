-- The runs of a customer that skipped themselves in [@since, @until), with the reason (the mirror
-- is the only record of why: Airflow keeps just the task's "skipped"). @config_id: '' for all.
SELECT dag_id, run_id, skip_reason, run_type
FROM `${project}.${dataset}.pipeline_runs_current`
WHERE customer_id = @customer_id
  AND (@config_id = '' OR config_id = @config_id)
  AND state = 'SKIPPED'
  AND scheduled_time >= @since
  AND scheduled_time < @until
