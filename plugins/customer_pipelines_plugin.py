"""The Airflow plugin object of this project (the REST API and the fleet page attach here)."""

from airflow.plugins_manager import AirflowPlugin


class CustomerPipelinesPlugin(AirflowPlugin):
    name = "customer_pipelines"
