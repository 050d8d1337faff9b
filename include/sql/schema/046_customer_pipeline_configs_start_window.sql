-- A config's start window in minutes: its runs start at a stable offset inside this window after each
-- tick (models.start_offset, from a hash of the config's identity), so a fleet whose crons share a
-- minute spreads its burst; NULL or 0: at the tick. A table created before the column existed gets it
-- here; its rows read NULL. Applying twice is a no-op.
ALTER TABLE `${project}.${dataset}.customer_pipeline_configs` ADD COLUMN IF NOT EXISTS start_window_minutes INT64;
