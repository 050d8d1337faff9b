-- The fleet page: per customer, the runs started today (UTC) past their config's SLA.
SELECT customer_id, COUNT(*) AS sla_breaches
FROM `${project}.${dataset}.sla_breaches`
WHERE started_at >= TIMESTAMP(CURRENT_DATE())
GROUP BY customer_id
