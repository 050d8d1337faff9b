CREATE TABLE IF NOT EXISTS `${project}.${dataset}.pipeline_schedule_audit` (
  audit_id STRING NOT NULL,
  config_id STRING,
  customer_id STRING NOT NULL,
  action STRING NOT NULL,            -- CREATE | UPDATE | ENABLE | PAUSE | DELETE | AUTO_PAUSE | ...
  changed_by STRING NOT NULL,
  changed_at TIMESTAMP NOT NULL,
  old_value JSON,
  new_value JSON,
  reason STRING
)
PARTITION BY DATE(changed_at)
CLUSTER BY customer_id
