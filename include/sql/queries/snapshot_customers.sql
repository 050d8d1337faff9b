-- Customers with the plan in force now (status and limits decide pools, quotas and pausing).
SELECT
  c.customer_id,
  c.company_name,
  c.status,
  s.plan,
  s.daily_run_limit,
  s.monthly_run_limit,
  s.max_concurrent_runs
FROM `${project}.${dataset}.customers_current` AS c
LEFT JOIN `${project}.${dataset}.customer_subscriptions_current` AS s USING (customer_id)
ORDER BY c.customer_id
