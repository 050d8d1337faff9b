-- Executions counted against each customer's monthly quota in a month (first day, UTC): the fleet page.
SELECT customer_id, COUNT(*) AS used
FROM cp_quota_reservations
WHERE usage_month = %(usage_month)s
GROUP BY customer_id
