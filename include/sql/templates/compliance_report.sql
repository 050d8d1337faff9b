-- Passed / failed controls of @framework checked on @run_date for one customer and provider.
MERGE `${project}.${data_dataset}.compliance_daily` AS T
USING (
  SELECT
    COUNTIF(passed) AS controls_passed,
    COUNTIF(NOT passed) AS controls_failed,
    SAFE_DIVIDE(COUNTIF(passed), COUNT(*)) AS score
  FROM `${project}.${data_dataset}.compliance_controls`
  WHERE customer_id = @customer_id AND provider = @provider AND framework = @framework AND check_date = @run_date
) AS S
ON T.customer_id = @customer_id AND T.provider = @provider AND T.framework = @framework AND T.report_date = @run_date
WHEN MATCHED THEN UPDATE SET
  controls_passed = S.controls_passed, controls_failed = S.controls_failed, score = S.score,
  run_key = @run_key, computed_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT
  (customer_id, provider, framework, report_date, controls_passed, controls_failed, score, run_key, computed_at)
  VALUES (@customer_id, @provider, @framework, @run_date, S.controls_passed, S.controls_failed, S.score, @run_key, CURRENT_TIMESTAMP());

SELECT COUNT(*) AS rows_written, CAST(COALESCE(SUM(controls_passed + controls_failed), 0) AS FLOAT64) AS controls_checked
FROM `${project}.${data_dataset}.compliance_daily`
WHERE customer_id = @customer_id AND provider = @provider AND run_key = @run_key;
