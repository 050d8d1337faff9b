-- An operator's change of a customer's status (ACTIVE | SUSPENDED | CHURNED): rare, off the hot path.
UPDATE `${project}.${dataset}.customers`
SET status = @status, updated_at = CURRENT_TIMESTAMP()
WHERE customer_id = @customer_id;
