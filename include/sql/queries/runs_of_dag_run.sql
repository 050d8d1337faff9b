SELECT *
FROM `${project}.${dataset}.scheduled_pipeline_run_events`
WHERE dag_id = @dag_id AND run_id = @run_id
ORDER BY event_time
