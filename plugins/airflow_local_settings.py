"""Airflow's cluster policies for this deployment: Airflow imports this module at start-up from its
plugins folder (on sys.path). A deployment with policies of its own adds this hook to them."""

from typing import Any

__all__ = ["task_instance_mutation_hook"]


def task_instance_mutation_hook(task_instance: Any) -> None:
    # Imported here: this module loads while Airflow's settings initialise, before our package may.
    from customer_pipelines.runs.backfills import backfill_task_priority

    backfill_task_priority(task_instance)
