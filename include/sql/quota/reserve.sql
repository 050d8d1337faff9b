-- Run inside one transaction after pg_advisory_xact_lock(customer): counts the customer's
-- reservations of the day and of the month.
SELECT
  COUNT(*) FILTER (WHERE usage_day = %(usage_day)s) AS used_today,
  COUNT(*) AS used_this_month
FROM cp_quota_reservations
WHERE customer_id = %(customer_id)s AND usage_month = %(usage_month)s
