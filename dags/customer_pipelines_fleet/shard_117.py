"""Airflow DAG file: one shard of the customer pipeline fleet (customer_pipelines/fleet/shards.py).

Every shard file is the same; its name says which configs it builds."""

from customer_pipelines.fleet.shards import register_shard

register_shard(globals(), __file__)
