-- Every API key that can still authenticate (not revoked); the API holds them in memory, so a
-- request never waits for BigQuery. Expiry is checked per request.
SELECT key_id, customer_id, key_prefix, key_hash, scopes, created_at, expires_at
FROM `${project}.${dataset}.customer_api_keys_current`
WHERE revoked_at IS NULL
