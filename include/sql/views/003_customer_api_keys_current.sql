-- Each API key as it is now: customer_api_keys is append-only (a revocation appends the key's row
-- again with revoked_at set), so a revoked version always wins over the key's earlier rows.
CREATE OR REPLACE VIEW `${project}.${dataset}.customer_api_keys_current` AS
SELECT *
FROM `${project}.${dataset}.customer_api_keys`
QUALIFY ROW_NUMBER() OVER (PARTITION BY key_id ORDER BY revoked_at IS NULL, revoked_at DESC, created_at DESC) = 1
