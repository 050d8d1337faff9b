-- Removes the data-plane rows (what the templates read) of the given customers, for re-seeding.
DELETE FROM `${project}.${data_dataset}.billing_export` WHERE customer_id IN UNNEST(@customer_ids);
DELETE FROM `${project}.${data_dataset}.security_findings` WHERE customer_id IN UNNEST(@customer_ids);
DELETE FROM `${project}.${data_dataset}.compliance_controls` WHERE customer_id IN UNNEST(@customer_ids);
DELETE FROM `${project}.${data_dataset}.observability_usage` WHERE customer_id IN UNNEST(@customer_ids);
