-- One customer's runs (their current execution) from the mirror, newest first, filtered and paged
-- by a (scheduled_time, run_key) cursor: the first page passes @cursor_time = @until and
-- @cursor_key = ''. @config_id, @state: '' for "any".
SELECT *
FROM `${project}.${dataset}.pipeline_runs_current`
WHERE customer_id = @customer_id
  AND (@config_id = '' OR config_id = @config_id)
  AND (@state = '' OR state = @state)
  AND scheduled_time >= @since
  AND (scheduled_time < @cursor_time OR (scheduled_time = @cursor_time AND run_key < @cursor_key))
ORDER BY scheduled_time DESC, run_key DESC
LIMIT @limit
