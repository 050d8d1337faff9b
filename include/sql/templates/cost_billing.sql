-- Re-aggregates the billing export of one customer and provider for the days
-- [run_date - lookback_days + 1, run_date] into cost_daily. One MERGE: atomic, and idempotent for a run.
MERGE `${project}.${data_dataset}.cost_daily` AS T
USING (
  SELECT customer_id, provider, usage_date, service, SUM(cost) AS total_cost, COUNT(*) AS line_items
  FROM `${project}.${data_dataset}.billing_export`
  WHERE customer_id = @customer_id
    AND provider = @provider
    AND currency = @currency
    AND usage_date BETWEEN DATE_SUB(@run_date, INTERVAL @lookback_days - 1 DAY) AND @run_date
  GROUP BY customer_id, provider, usage_date, service
) AS S
ON T.customer_id = S.customer_id AND T.provider = S.provider AND T.usage_date = S.usage_date AND T.service = S.service
WHEN MATCHED THEN UPDATE SET
  total_cost = S.total_cost, currency = @currency, line_items = S.line_items, run_key = @run_key, computed_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (customer_id, provider, usage_date, service, total_cost, currency, line_items, run_key, computed_at)
  VALUES (S.customer_id, S.provider, S.usage_date, S.service, S.total_cost, @currency, S.line_items, @run_key, CURRENT_TIMESTAMP())
WHEN NOT MATCHED BY SOURCE
  AND T.customer_id = @customer_id AND T.provider = @provider
  AND T.usage_date BETWEEN DATE_SUB(@run_date, INTERVAL @lookback_days - 1 DAY) AND @run_date
  THEN DELETE;

SELECT COUNT(*) AS rows_written, CAST(COALESCE(SUM(total_cost), 0) AS FLOAT64) AS total_cost
FROM `${project}.${data_dataset}.cost_daily`
WHERE customer_id = @customer_id AND provider = @provider AND run_key = @run_key;
