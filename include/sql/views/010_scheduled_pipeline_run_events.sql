-- Each transition once: the mirror may write a transition more than once (retries, re-sends after a
-- timeout, two mechanisms reporting the same change); they share the deterministic event_key.
CREATE OR REPLACE VIEW `${project}.${dataset}.scheduled_pipeline_run_events` AS
SELECT *
FROM `${project}.${dataset}.scheduled_pipeline_runs`
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY event_key ORDER BY recorded_at, event_time) = 1
