-- The subscription in force now for each customer (the latest valid one).
CREATE OR REPLACE VIEW `${project}.${dataset}.customer_subscriptions_current` AS
SELECT *
FROM `${project}.${dataset}.customer_subscriptions`
WHERE valid_from <= CURRENT_TIMESTAMP()
  AND (valid_until IS NULL OR valid_until > CURRENT_TIMESTAMP())
QUALIFY ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY valid_from DESC, updated_at DESC) = 1
