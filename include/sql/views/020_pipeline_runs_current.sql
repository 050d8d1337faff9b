-- One row per run (dag_id/run_id): its current execution (the latest clear or reprocessing, see
-- pipeline_executions) with that execution's latest state and its own times. Earlier executions of
-- the run stay in pipeline_executions (usage counts each).
CREATE OR REPLACE VIEW `${project}.${dataset}.pipeline_runs_current` AS
SELECT *
FROM `${project}.${dataset}.pipeline_executions`
WHERE is_current
