-- One customer's and provider's day (@run_date) per source: for a model (OPENAI, CLAUDE) its
-- requests, errors, tokens and mean latency; for a monitored service (GCP, AWS, AZURE) its requests,
-- error rate and uptime (probes up / probes). Sources with fewer than @min_requests requests are left
-- out. One MERGE: atomic, and idempotent for a run.
MERGE `${project}.${data_dataset}.observability_daily` AS T
USING (
  SELECT customer_id, provider, source,
    SUM(requests) AS requests,
    SUM(errors) AS errors,
    SAFE_DIVIDE(SUM(errors), SUM(requests)) AS error_rate,
    SUM(input_tokens) AS input_tokens,
    SUM(output_tokens) AS output_tokens,
    SAFE_DIVIDE(SUM(latency_ms_total), SUM(requests)) AS avg_latency_ms,
    SAFE_DIVIDE(SUM(probes_up), SUM(probes)) AS uptime
  FROM `${project}.${data_dataset}.observability_usage`
  WHERE customer_id = @customer_id AND provider = @provider AND usage_date = @run_date
  GROUP BY customer_id, provider, source
  HAVING SUM(requests) >= @min_requests
) AS S
ON T.customer_id = S.customer_id AND T.provider = S.provider AND T.report_date = @run_date AND T.source = S.source
WHEN MATCHED THEN UPDATE SET
  requests = S.requests, errors = S.errors, error_rate = S.error_rate, input_tokens = S.input_tokens,
  output_tokens = S.output_tokens, avg_latency_ms = S.avg_latency_ms, uptime = S.uptime,
  run_key = @run_key, computed_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (customer_id, provider, report_date, source, requests, errors, error_rate,
    input_tokens, output_tokens, avg_latency_ms, uptime, run_key, computed_at)
  VALUES (S.customer_id, S.provider, @run_date, S.source, S.requests, S.errors, S.error_rate,
    S.input_tokens, S.output_tokens, S.avg_latency_ms, S.uptime, @run_key, CURRENT_TIMESTAMP())
WHEN NOT MATCHED BY SOURCE AND T.customer_id = @customer_id AND T.provider = @provider AND T.report_date = @run_date
  THEN DELETE;

SELECT COUNT(*) AS rows_written, CAST(COALESCE(SUM(requests), 0) AS FLOAT64) AS requests,
  CAST(COALESCE(SUM(errors), 0) AS FLOAT64) AS errors
FROM `${project}.${data_dataset}.observability_daily`
WHERE customer_id = @customer_id AND provider = @provider AND run_key = @run_key;
