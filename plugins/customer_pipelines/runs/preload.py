"""What a task of ours imports, imported once by the process that forks the tasks.

Airflow 3.3 on Linux forks every task: the LocalExecutor's workers are forked from the scheduler when
the executor starts, and each task's process from its worker (the Task SDK's supervisor, a bare
``os.fork``); a Celery worker forks its pool the same way. A module imported before those forks is
in every task's memory for free (copy-on-write), while one imported by the task costs each task
again: under a burst of 200 runs at one tick on 2 cores, that import was most of a task's CPU
(google-cloud-bigquery alone is about 0.5 s). ``airflow_local_settings`` calls
:func:`preload_task_modules` when the process is one that forks tasks; nothing here opens a
connection, a client or a thread (a fork must not inherit them)."""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Sequence

log = logging.getLogger(__name__)

TASK_MODULES = (
    # the worker-side parse of a shard file (one DAG) and the operator it builds
    "customer_pipelines.fleet.factory",
    "customer_pipelines.runs.operators",
    # what the operator imports when it executes
    "customer_pipelines.bigquery.store",
    "customer_pipelines.bigquery.hooks",  # the google provider's BigQueryHook: the heaviest import
    "customer_pipelines.runs.mirror",
    "customer_pipelines.runs.quota",
    "customer_pipelines.runs.failures",
    "customer_pipelines.snapshot",
    # the Task SDK's own task runner (the forked child's main)
    "airflow.sdk.execution_time.task_runner",
)

FORKING_COMMANDS: tuple[tuple[str, ...], ...] = (("scheduler",), ("celery", "worker"))
"""``airflow`` sub-commands whose process forks tasks (LocalExecutor in the scheduler; Celery)."""


def forks_tasks(argv: Sequence[str]) -> bool:
    """Whether ``argv`` (``sys.argv`` of an ``airflow`` command) starts a process that forks tasks."""
    words = tuple(a for a in argv[1:] if not a.startswith("-"))
    return any(words[: len(command)] == command for command in FORKING_COMMANDS)


def preload_task_modules(modules: Sequence[str] = TASK_MODULES) -> float:
    """Import ``modules``; the seconds it took. A module that fails to import is logged and left to
    the task (which then reports the error where it belongs)."""
    began = time.monotonic()
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # never stop the scheduler for an optimisation
            log.warning("preloading %s failed; tasks import it themselves", name, exc_info=True)
    return time.monotonic() - began
