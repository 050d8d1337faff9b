"""Airflow's cluster policies for this deployment: Airflow imports this module at start-up from its
plugins folder (on sys.path). A deployment with policies of its own adds this hook to them.

In a process that forks tasks (the scheduler with the LocalExecutor, a Celery worker) it also
imports what our tasks import, once, before the forks (customer_pipelines/runs/preload.py). In the
DAG processor it keeps a parse request that arrives while its file is being parsed, which Airflow
3.3.2 drops (customer_pipelines/fleet/parsing.py)."""

import sys
from typing import Any

__all__ = ["task_instance_mutation_hook"]


def task_instance_mutation_hook(task_instance: Any) -> None:
    # Imported here: this module loads while Airflow's settings initialise, before our package may.
    from customer_pipelines.runs.backfills import backfill_task_priority

    backfill_task_priority(task_instance)


def _preload_for_forked_tasks() -> None:
    from customer_pipelines.runs.preload import forks_tasks, preload_task_modules

    if forks_tasks(sys.argv):
        preload_task_modules()


def _keep_parse_requests() -> None:
    from customer_pipelines.fleet.parsing import keep_requests_for_files_being_parsed

    if "dag-processor" in sys.argv[1:2]:
        keep_requests_for_files_being_parsed()


_preload_for_forked_tasks()
_keep_parse_requests()
