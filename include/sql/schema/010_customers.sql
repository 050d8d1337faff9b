-- An append-only version log: each row is one version of a customer, and every change appends a
-- new full row; no row is ever updated (see include/sql/README.md, "Append-only tables"). Read the
-- customers through views/002_customers_current.sql: the latest updated_at per customer_id wins.
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.customers` (
  customer_id STRING NOT NULL,
  company_name STRING NOT NULL,
  admin_email STRING,
  status STRING NOT NULL,            -- ACTIVE | SUSPENDED | CHURNED; only ACTIVE customers' pipelines run
  created_at TIMESTAMP NOT NULL,     -- when the customer was created (copied into every version)
  updated_at TIMESTAMP NOT NULL      -- when this version was written
)
CLUSTER BY customer_id
