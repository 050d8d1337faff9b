-- Removes every row of the given customers (used to re-seed demo and synthetic fleets).
DELETE FROM `${project}.${dataset}.customers` WHERE customer_id IN UNNEST(@customer_ids);
DELETE FROM `${project}.${dataset}.customer_subscriptions` WHERE customer_id IN UNNEST(@customer_ids);
DELETE FROM `${project}.${dataset}.customer_pipeline_configs` WHERE customer_id IN UNNEST(@customer_ids);
DELETE FROM `${project}.${data_dataset}.billing_export` WHERE customer_id IN UNNEST(@customer_ids);
DELETE FROM `${project}.${data_dataset}.security_findings` WHERE customer_id IN UNNEST(@customer_ids);
DELETE FROM `${project}.${data_dataset}.compliance_controls` WHERE customer_id IN UNNEST(@customer_ids);
