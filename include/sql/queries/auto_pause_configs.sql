-- The failure policy's pause: one batched UPDATE per sync round (never per run).
UPDATE `${project}.${dataset}.customer_pipeline_configs`
SET is_active = FALSE, version = version + 1, updated_at = CURRENT_TIMESTAMP(), updated_by = 'auto-pause'
WHERE config_id IN UNNEST(@config_ids) AND is_active AND deleted_at IS NULL;
