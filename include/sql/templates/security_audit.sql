-- Open findings on @run_date by severity (at or above @min_severity) for one customer and provider.
MERGE `${project}.${data_dataset}.security_audit_daily` AS T
USING (
  SELECT customer_id, provider, severity, COUNT(*) AS open_findings
  FROM `${project}.${data_dataset}.security_findings`
  WHERE customer_id = @customer_id
    AND provider = @provider
    AND detected_date <= @run_date
    AND (resolved_date IS NULL OR resolved_date > @run_date)
    AND CASE severity WHEN 'LOW' THEN 1 WHEN 'MEDIUM' THEN 2 WHEN 'HIGH' THEN 3 WHEN 'CRITICAL' THEN 4 END
        >= CASE @min_severity WHEN 'LOW' THEN 1 WHEN 'MEDIUM' THEN 2 WHEN 'HIGH' THEN 3 WHEN 'CRITICAL' THEN 4 END
  GROUP BY customer_id, provider, severity
) AS S
ON T.customer_id = S.customer_id AND T.provider = S.provider AND T.audit_date = @run_date AND T.severity = S.severity
WHEN MATCHED THEN UPDATE SET open_findings = S.open_findings, run_key = @run_key, computed_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (customer_id, provider, audit_date, severity, open_findings, run_key, computed_at)
  VALUES (S.customer_id, S.provider, @run_date, S.severity, S.open_findings, @run_key, CURRENT_TIMESTAMP())
WHEN NOT MATCHED BY SOURCE AND T.customer_id = @customer_id AND T.provider = @provider AND T.audit_date = @run_date
  THEN DELETE;

SELECT COUNT(*) AS rows_written, CAST(COALESCE(SUM(open_findings), 0) AS FLOAT64) AS open_findings
FROM `${project}.${data_dataset}.security_audit_daily`
WHERE customer_id = @customer_id AND provider = @provider AND run_key = @run_key;
