CREATE OR REPLACE VIEW `${project}.${dataset}.customer_quota_usage` AS
SELECT
  c.customer_id,
  c.company_name,
  c.status,
  s.plan,
  s.daily_run_limit,
  s.monthly_run_limit,
  s.max_concurrent_runs,
  u.runs_today,
  u.runs_this_month,
  u.running_now,
  u.skipped_quota_today,
  SAFE_DIVIDE(u.runs_today, s.daily_run_limit) AS daily_used_ratio,
  SAFE_DIVIDE(u.runs_this_month, s.monthly_run_limit) AS monthly_used_ratio
FROM `${project}.${dataset}.customers_current` AS c
LEFT JOIN `${project}.${dataset}.customer_subscriptions_current` AS s USING (customer_id)
LEFT JOIN `${project}.${dataset}.customer_usage` AS u USING (customer_id)
