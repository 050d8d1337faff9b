-- Which (try, state) transitions the mirror already holds for a set of runs (for reconciliation).
SELECT DISTINCT run_key, try_number, state
FROM `${project}.${dataset}.scheduled_pipeline_runs`
WHERE run_key IN UNNEST(@run_keys)
