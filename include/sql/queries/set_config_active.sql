-- Enable or pause one config of one customer (a config is identified by both ids, never config_id alone).
UPDATE `${project}.${dataset}.customer_pipeline_configs`
SET is_active = @is_active, version = version + 1, updated_at = CURRENT_TIMESTAMP(), updated_by = @updated_by
WHERE customer_id = @customer_id AND config_id = @config_id AND deleted_at IS NULL;
