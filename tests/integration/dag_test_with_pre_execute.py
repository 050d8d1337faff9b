"""Run one customer DAG with Airflow's ``dag.test()`` (what ``airflow dags test`` does), changing
the config snapshot just before its task executes: what happens between a worker's parse of the
DAG and the start of its run, which no CLI command can time.

    python tests/integration/dag_test_with_pre_execute.py <dag_id> refresh-snapshot|remove-snapshot

``refresh-snapshot``: the syncer's refresh lands (the config changed in BigQuery meanwhile);
``remove-snapshot``: the snapshot and its previous generation are gone (a damaged or wiped disk).
Run with the environment of the integration tests' ``airflow_cli`` fixture."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def main(dag_id: str, action: str) -> None:
    from customer_pipelines.bigquery.store import BigQueryStore
    from customer_pipelines.fleet.factory import TASK_ID, load_fleet
    from customer_pipelines.settings import get_settings
    from customer_pipelines.snapshot import refresh_snapshot

    settings = get_settings()
    dag = load_fleet(settings=settings).dags[dag_id]
    snapshot = settings.snapshot_file

    def refresh(context: Any) -> None:
        refresh_snapshot(BigQueryStore(settings), snapshot)

    def remove(context: Any) -> None:
        snapshot.unlink()
        snapshot.with_name(snapshot.name + ".prev").unlink(missing_ok=True)

    hooks: dict[str, Callable[[Any], None]] = {"refresh-snapshot": refresh, "remove-snapshot": remove}
    # Airflow's pre_execute hook: the task runner calls it right before execute, in the task's process.
    dag.get_task(TASK_ID)._pre_execute_hook = hooks[action]
    dag.test()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
