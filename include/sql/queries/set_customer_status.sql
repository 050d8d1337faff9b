-- An operator's change of a customer's status (ACTIVE | SUSPENDED | CHURNED): rare, off the hot path.
-- customers is an append-only version log: this appends the customer's next version (a copy of the
-- current one with the new status) and never UPDATEs. The latest updated_at wins, so the new version
-- is stamped after the current one even if the clock that stamped that one ran ahead.
INSERT INTO `${project}.${dataset}.customers` (customer_id, company_name, admin_email, status, created_at, updated_at)
SELECT
  customer_id, company_name, admin_email, @status, created_at,
  GREATEST(CURRENT_TIMESTAMP(), TIMESTAMP_ADD(updated_at, INTERVAL 1 MICROSECOND))
FROM `${project}.${dataset}.customers_current`
WHERE customer_id = @customer_id;
