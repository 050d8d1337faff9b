-- When the next tick's run starts: next_run_time plus the config's start offset (its start window;
-- equal to next_run_time without one). A table created before the column existed gets it here; the
-- next sync round fills it. Applying twice is a no-op.
ALTER TABLE `${project}.${dataset}.config_next_runs` ADD COLUMN IF NOT EXISTS next_start_time TIMESTAMP;
