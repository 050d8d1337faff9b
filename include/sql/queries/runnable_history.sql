-- When a customer's configs and the customer itself could run, from their version logs: every
-- version written before @until, oldest first (the tick history turns them into hold intervals).
-- The one reader of the logs themselves instead of the *_current views: history is what it needs.
-- @config_id: '' for all of the customer's configs.
SELECT 'config' AS kind, config_id, (is_active AND deleted_at IS NULL) AS runnable, updated_at AS changed_at
FROM `${project}.${dataset}.customer_pipeline_configs`
WHERE customer_id = @customer_id
  AND (@config_id = '' OR config_id = @config_id)
  AND updated_at < @until
UNION ALL
SELECT 'customer' AS kind, CAST(NULL AS STRING) AS config_id, status = 'ACTIVE' AS runnable, updated_at AS changed_at
FROM `${project}.${dataset}.customers`
WHERE customer_id = @customer_id
  AND updated_at < @until
ORDER BY changed_at
