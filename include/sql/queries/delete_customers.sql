-- Removes the control-plane rows of the given customers (used to re-seed demo and synthetic fleets);
-- queries/delete_customer_data.sql removes their data-plane rows.
DELETE FROM `${project}.${dataset}.customers` WHERE customer_id IN UNNEST(@customer_ids);
DELETE FROM `${project}.${dataset}.customer_subscriptions` WHERE customer_id IN UNNEST(@customer_ids);
DELETE FROM `${project}.${dataset}.customer_pipeline_configs` WHERE customer_id IN UNNEST(@customer_ids);
