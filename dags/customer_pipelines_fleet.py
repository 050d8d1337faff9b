"""Airflow DAG file: every customer pipeline config in the snapshot becomes a DAG here.

Thin on purpose: the factory reads only the local snapshot (never BigQuery), never raises, and on a
worker builds only the DAG of the task it runs."""

from customer_pipelines.fleet.factory import register_dags

register_dags(globals())
