CREATE TABLE IF NOT EXISTS `${project}.${dataset}.customer_api_keys` (
  key_id STRING NOT NULL,
  customer_id STRING NOT NULL,
  key_prefix STRING NOT NULL,        -- first characters of the key, for lookup; the key itself is never stored
  key_hash STRING NOT NULL,          -- SHA-256 hex digest of '<key_id>:<secret>' (api/keys.py); the key itself is never stored
  scopes ARRAY<STRING>,
  created_at TIMESTAMP NOT NULL,
  expires_at TIMESTAMP,
  revoked_at TIMESTAMP               -- append-only: a revocation appends the key's row again with revoked_at set
)
CLUSTER BY key_prefix
