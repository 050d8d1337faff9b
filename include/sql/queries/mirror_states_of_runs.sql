-- Which (try, state) transitions the mirror already holds for a set of runs, and who reported them
-- (for reconciliation: an ending the operator wrote itself tells whether its pipeline started).
SELECT DISTINCT run_key, try_number, state, source
FROM `${project}.${dataset}.scheduled_pipeline_runs`
WHERE run_key IN UNNEST(@run_keys)
  -- the table is partitioned by DATE(event_time): read only the days these runs' transitions can be on
  AND event_time >= @since
