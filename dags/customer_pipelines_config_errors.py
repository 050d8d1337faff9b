"""Airflow DAG file that defines no DAG: it raises when the snapshot holds configs that cannot
become DAGs, so each one shows in Airflow's "DAG Import Errors" with its reason. Raising here hides
nothing; the fleet's DAGs live in customer_pipelines_fleet.py."""

from customer_pipelines.fleet.factory import raise_config_errors

raise_config_errors()
