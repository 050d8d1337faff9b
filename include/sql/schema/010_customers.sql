CREATE TABLE IF NOT EXISTS `${project}.${dataset}.customers` (
  customer_id STRING NOT NULL,
  company_name STRING NOT NULL,
  admin_email STRING,
  status STRING NOT NULL,            -- ACTIVE | SUSPENDED | CHURNED; only ACTIVE customers' pipelines run
  created_at TIMESTAMP NOT NULL,
  updated_at TIMESTAMP NOT NULL
)
CLUSTER BY customer_id
