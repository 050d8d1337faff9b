"""Reconciliation: compare Airflow's task instances (its own record of what ran) with the mirror for
a time window and write the transitions the mirror lacks. It covers every path where no other
mechanism could report (a process killed before it spoke, a spool lost with a worker's disk).

Runs where the metadata database is reachable: the syncer (each round) or the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from customer_pipelines.listeners import TASK_ID, identity_of
from customer_pipelines.mirror import ErrorType, RunState, run_event, write_events

TERMINAL = {
    "success": RunState.COMPLETED,
    "failed": RunState.FAILED,
    "skipped": RunState.SKIPPED,
    "up_for_retry": RunState.RETRYING,
    "upstream_failed": RunState.CANCELLED,
    "removed": RunState.CANCELLED,
}
ENDING_STATES = {
    s.value
    for s in (
        RunState.COMPLETED,
        RunState.FAILED,
        RunState.SKIPPED,
        RunState.TIMEOUT,
        RunState.CANCELLED,
        RunState.RETRYING,
    )
}


@dataclass(frozen=True)
class TryRecord:
    dag_id: str
    run_id: str
    try_number: int
    state: str | None
    start_date: datetime | None
    end_date: datetime | None
    logical_date: datetime | None
    run_type: str | None
    run_after: datetime | None


@dataclass
class ReconcileResult:
    tries_checked: int
    written: list[dict[str, Any]]


def airflow_tries(since: datetime, until: datetime) -> list[TryRecord]:
    """Every try of the customer DAGs' task that started or ended in the window (current tries and
    earlier ones from the task instance history)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session
    from sqlalchemy import and_, or_, select

    records = []
    with create_session() as session:
        for model in (TaskInstance, TaskInstanceHistory):
            query = (
                select(
                    model.dag_id,
                    model.run_id,
                    model.try_number,
                    model.state,
                    model.start_date,
                    model.end_date,
                    DagRun.logical_date,
                    DagRun.run_type,
                    DagRun.run_after,
                )
                .join(DagRun, and_(DagRun.dag_id == model.dag_id, DagRun.run_id == model.run_id))
                .where(model.task_id == TASK_ID, model.dag_id.contains("."))
                .where(or_(model.start_date.between(since, until), model.end_date.between(since, until)))
            )
            records += [TryRecord(*row) for row in session.execute(query)]
    return records


def expected_events(tries: Iterable[TryRecord]) -> list[dict[str, Any]]:
    events = []
    for t in tries:
        identity = identity_of(
            t.dag_id,
            t.run_id,
            try_number=t.try_number,
            logical_date=t.logical_date,
            run_type=t.run_type,
            run_after=t.run_after,
        )
        if t.start_date is not None:
            events.append(run_event(identity, RunState.RUNNING, source="reconciler", started_at=t.start_date))
        airflow_state = getattr(t.state, "value", t.state) or ""
        state = TERMINAL.get(airflow_state)
        if state is not None:
            unreported = state not in (RunState.COMPLETED, RunState.SKIPPED)
            events.append(
                run_event(
                    identity,
                    state,
                    source="reconciler",
                    started_at=t.start_date,
                    ended_at=t.end_date or datetime.now(UTC),
                    # The operator mirrors every failure of the customer's pipeline itself (spooled if
                    # BigQuery is down): an ending only Airflow knows of is the platform's (the task
                    # failed before the operator ran, its process died, its spool was lost).
                    error_type=ErrorType.PLATFORM.value if unreported else None,
                    error_message=f"Airflow recorded the try as {airflow_state}; the task never reported it"
                    if unreported
                    else None,
                )
            )
    return events


def missing_events(expected: list[dict[str, Any]], present: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A RUNNING transition is present if that try has one; an ending is present if that try has any
    ending (the operator's TIMEOUT or a person's CANCELLED is more precise than Airflow's 'failed')."""
    running, ended = set(), set()
    for row in present:
        key = (row["run_key"], row["try_number"])
        if row["state"] == RunState.RUNNING.value:
            running.add(key)
        elif row["state"] in ENDING_STATES:
            ended.add(key)
    missing = []
    for event in expected:
        key = (event["run_key"], event["try_number"])
        covered = running if event["state"] == RunState.RUNNING.value else ended
        if key not in covered:
            missing.append(event)
    return missing


def reconcile(store: Any, *, since: datetime | None = None, until: datetime | None = None) -> ReconcileResult:
    until = until or datetime.now(UTC)
    since = since or until - timedelta(hours=24)
    tries = airflow_tries(since, until)
    expected = expected_events(tries)
    if not expected:
        return ReconcileResult(len(tries), [])
    run_keys = sorted({e["run_key"] for e in expected})
    present = store.query("queries/mirror_states_of_runs.sql", {"run_keys": run_keys})
    missing = missing_events(expected, present)
    if missing:
        write_events(store, missing)
    return ReconcileResult(len(tries), missing)
