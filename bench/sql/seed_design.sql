-- The original design's per-run writes (seeds/: create the run row, QUEUED -> RUNNING -> COMPLETED
-- by UPDATE, then UPDATE the config's last run and the usage counters): the comparison baseline.
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.bench_seed_runs` (run_id STRING, config_id STRING, state STRING, started_at TIMESTAMP, ended_at TIMESTAMP);
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.bench_seed_configs` (config_id STRING, last_run_time TIMESTAMP, last_run_status STRING);
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.bench_seed_usage` (customer_id STRING, runs_today INT64, succeeded_today INT64);
