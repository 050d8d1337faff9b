-- The execution of a run an event belongs to (Airflow's DagRun.clear_number: a clear or a backfill's
-- reprocessing runs the same run_id again). A table created before the column existed gets it here;
-- its old rows read NULL, the first execution. Applying twice is a no-op.
ALTER TABLE `${project}.${dataset}.scheduled_pipeline_runs` ADD COLUMN IF NOT EXISTS clear_number INT64;
