-- A config's catch-up policy: after ticks were missed (a scheduler outage, a slow queue) the scheduler
-- also runs up to this many of the latest missed ticks, oldest first (fleet/timetables.py); NULL or 0:
-- only the latest, Airflow's catchup=False. A table created before the column existed gets it here;
-- its rows read NULL. Applying twice is a no-op.
ALTER TABLE `${project}.${dataset}.customer_pipeline_configs` ADD COLUMN IF NOT EXISTS auto_backfill_ticks INT64;
