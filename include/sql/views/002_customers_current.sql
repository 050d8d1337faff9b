-- Each customer's latest version (customers is an append-only version log): the latest updated_at wins.
CREATE OR REPLACE VIEW `${project}.${dataset}.customers_current` AS
SELECT *
FROM `${project}.${dataset}.customers`
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY updated_at DESC) = 1
