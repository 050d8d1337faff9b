INSERT INTO `${project}.${dataset}.bench_seed_runs` (run_id, config_id, state) VALUES (@run_id, @config_id, 'SCHEDULED');
UPDATE `${project}.${dataset}.bench_seed_runs` SET state = 'RUNNING', started_at = CURRENT_TIMESTAMP() WHERE run_id = @run_id;
UPDATE `${project}.${dataset}.bench_seed_runs` SET state = 'COMPLETED', ended_at = CURRENT_TIMESTAMP() WHERE run_id = @run_id;
UPDATE `${project}.${dataset}.bench_seed_configs` SET last_run_time = CURRENT_TIMESTAMP(), last_run_status = 'SUCCESS' WHERE config_id = @config_id;
UPDATE `${project}.${dataset}.bench_seed_usage` SET runs_today = runs_today + 1, succeeded_today = succeeded_today + 1 WHERE customer_id = @customer_id;
