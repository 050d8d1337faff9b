-- Each config's latest version (customer_pipeline_configs is an append-only version log). A config
-- is (customer_id, config_id): two customers may both have a config named the same. Soft-deleted
-- configs are kept (their latest version has deleted_at set): callers filter `deleted_at IS NULL`.
-- Two versions written at once from the same base share a version number; the later one wins.
CREATE OR REPLACE VIEW `${project}.${dataset}.customer_pipeline_configs_current` AS
SELECT *
FROM `${project}.${dataset}.customer_pipeline_configs`
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY customer_id, config_id ORDER BY version DESC, updated_at DESC) = 1
