-- Executions counted against each customer's daily quota on a UTC day (the fleet alert QUOTA_REACHED).
SELECT customer_id, COUNT(*) AS used
FROM cp_quota_reservations
WHERE usage_day = %(usage_day)s
GROUP BY customer_id
