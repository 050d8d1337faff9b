-- The failure policy's pause: one batched UPDATE per sync round (never per run). A config is
-- (customer_id, config_id), named here by its DAG id `<customer_id>.<config_id>` (neither id may
-- hold a dot), so another customer's config with the same config_id is never touched.
UPDATE `${project}.${dataset}.customer_pipeline_configs`
SET is_active = FALSE, version = version + 1, updated_at = CURRENT_TIMESTAMP(), updated_by = 'auto-pause'
WHERE CONCAT(customer_id, '.', config_id) IN UNNEST(@dag_ids) AND is_active AND deleted_at IS NULL;
