"""Reconciliation: compare Airflow's records of each try (the task instance, the task instance
history, and the log entry Airflow writes when a worker starts a try) with the mirror for a time
window and write the transitions the mirror lacks. It covers every path where no other mechanism
could report (a process killed before it spoke, a spool lost with a worker's disk, a DAG run marked
success while its task waits for a retry, which calls no task listener).

It writes only what Airflow's records prove:

- RUNNING for a try a worker started that ended in a state only a started pipeline reaches, unless
  the operator ended that try itself. A quota or inactive-customer skip happens before the pipeline
  starts; a try marked by hand before it ran gets a start_date from Airflow's ``set_state`` but no
  start in Airflow's log; a retry that is scheduled or queued still carries the previous try's
  start_date. The operator records RUNNING when the pipeline starts, before its ending and from the
  same spool: an ending of its own without RUNNING means the gate refused, failed or timed out
  first (or that RUNNING is still on its way).
- One ending per try, the one Airflow has: the task instance row speaks for its try, not the copy
  Airflow archived when a retry was planned.
- RETRYING is never final: a try Airflow later ended otherwise (a DAG run marked success skips a
  task waiting for its retry) gets that ending too.

A running try gets nothing: its operator reports for itself, and if it dies Airflow ends the try.

Runs where the metadata database is reachable: the syncer (each round) or the CLI."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from customer_pipelines.runs.listeners import TASK_ID, identity_of
from customer_pipelines.runs.mirror import ErrorType, RunState, run_event, write_events

TERMINAL = {
    "success": RunState.COMPLETED,
    "failed": RunState.FAILED,
    "skipped": RunState.SKIPPED,
    "up_for_retry": RunState.RETRYING,
    "upstream_failed": RunState.CANCELLED,
    "removed": RunState.CANCELLED,
}
"""Airflow's states of an ended try, as the mirror's states."""
PIPELINE_STARTED = {"success", "failed", "up_for_retry"}
"""Ended states a try that started its pipeline can have: a skipped try stopped at the gate (or was
skipped by a mark before it ran again), upstream_failed and removed never ran."""
WAITING_FOR_NEXT_TRY = {None, "scheduled", "queued"}
"""States of a task instance row whose own try has not started: scheduling a retry raises
try_number but keeps the previous try's start_date, end_date and hostname; a cleared row keeps
the cleared try's (archived in the history)."""
FINAL_STATES = {
    s.value for s in (RunState.COMPLETED, RunState.FAILED, RunState.SKIPPED, RunState.TIMEOUT, RunState.CANCELLED)
}
ENDING_STATES = FINAL_STATES | {RunState.RETRYING.value}


@dataclass(frozen=True)
class TryRecord:
    """One try of a run's task as Airflow recorded it."""

    dag_id: str
    run_id: str
    try_number: int
    state: str | None
    start_date: datetime | None
    end_date: datetime | None
    logical_date: datetime | None
    run_type: str | None
    run_after: datetime | None
    max_tries: int | None = None
    archived: bool = False
    """From the task instance history (Airflow's copy of a try taken when the next was planned or the
    run cleared) rather than the task instance row."""
    started_by_worker: bool = False
    """Airflow's log has this try's start by a worker (the execution API's ``ti_run``)."""
    run_clear_number: int = 0
    """The DAG run's ``clear_number`` now (its current execution)."""
    run_queued_at: datetime | None = None
    """When the DAG run's current execution was queued (a clear resets it)."""

    @property
    def clear_number(self) -> int:
        """The execution this try belongs to. Airflow keeps only the run's current clear_number: a
        try of the current execution is the row's own or started after the run was last queued; an
        archived try from before belongs to an earlier execution, whose number Airflow no longer
        has (the previous one is the best guess, and never the current one, so the views never
        take it for the run's current state)."""
        if not self.archived or not self.run_clear_number:
            return self.run_clear_number
        moment = self.start_date or self.end_date
        if moment is None or self.run_queued_at is None or moment >= self.run_queued_at:
            return self.run_clear_number
        return self.run_clear_number - 1

    @property
    def airflow_state(self) -> str | None:
        return getattr(self.state, "value", self.state) or None


@dataclass
class ReconcileResult:
    tries_checked: int
    written: list[dict[str, Any]]


def airflow_tries(since: datetime, until: datetime) -> list[TryRecord]:
    """Every try of the customer DAGs' task that started, ended or changed in the window (current
    tries and earlier ones from the task instance history)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.log import Log
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import and_, exists, or_, select

    from customer_pipelines.airflow_db import metadata_session

    records = []
    with metadata_session() as session:
        for model, archived in ((TaskInstance, False), (TaskInstanceHistory, True)):
            started_by_worker = exists().where(
                Log.dag_id == model.dag_id,
                Log.task_id == model.task_id,
                Log.run_id == model.run_id,
                Log.map_index == model.map_index,
                Log.try_number == model.try_number,
                Log.event == TaskInstanceState.RUNNING.value,
            )
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
                    model.max_tries,
                    started_by_worker.label("started_by_worker"),
                    DagRun.clear_number,
                    DagRun.queued_at,
                )
                .join(DagRun, and_(DagRun.dag_id == model.dag_id, DagRun.run_id == model.run_id))
                .where(model.task_id == TASK_ID, model.dag_id.contains("."))
                .where(
                    or_(
                        model.start_date.between(since, until),
                        model.end_date.between(since, until),
                        # a mark keeps the try's dates (the DAG run marked success skips a try that
                        # ended hours ago): the row's update time is when it happened
                        model.updated_at.between(since, until),
                    )
                )
            )
            records += [
                TryRecord(
                    *row[:10],
                    archived=archived,
                    started_by_worker=bool(row[10]),
                    run_clear_number=int(row[11] or 0),
                    run_queued_at=row[12],
                )
                for row in session.execute(query)
            ]
    return records


def one_record_per_try(records: Iterable[TryRecord]) -> list[TryRecord]:
    """Each try once, from the record that speaks for it. A task instance row waiting for its next
    try speaks for none (its dates are an earlier try's). Otherwise the row wins over the history's
    copy of the same try: Airflow archives a try that goes up_for_retry (or is cleared while running)
    as 'failed' while the row keeps its real state."""
    chosen: dict[tuple[str, str, int], TryRecord] = {}
    for record in records:
        if not record.archived and record.airflow_state in WAITING_FOR_NEXT_TRY:
            continue
        key = (record.dag_id, record.run_id, record.try_number)
        if key not in chosen or not record.archived:
            chosen[key] = record
    return list(chosen.values())


def ending_of(record: TryRecord) -> tuple[RunState, str | None] | None:
    """How a try ended by Airflow's record, and the error_type reconcile writes with it (the one
    place both are decided); None while the try has not ended."""
    state = record.airflow_state
    if record.archived and state == "failed" and record.max_tries is not None and record.try_number <= record.max_tries:
        # The history stores 'failed' for a try archived as it went up_for_retry: one that could
        # still retry was retried. (A failure that skipped its retries and was cleared later reads
        # the same; the operator's own FAILED in the mirror covers that try.)
        ending: RunState | None = RunState.RETRYING
    else:
        ending = TERMINAL.get(state or "")
    if ending is None:
        return None
    # The operator mirrors every failure of the customer's pipeline itself (spooled if BigQuery is
    # down): a failure only Airflow knows of is the platform's (the task failed before the operator
    # ran, its process died, its spool was lost), and does not count toward auto-pause.
    unreported = ending not in (RunState.COMPLETED, RunState.SKIPPED)
    return ending, ErrorType.PLATFORM.value if unreported else None


def expected_events(tries: Iterable[TryRecord]) -> list[dict[str, Any]]:
    events = []
    for t in one_record_per_try(tries):
        ending = ending_of(t)
        if ending is None:
            continue
        identity = identity_of(
            t.dag_id,
            t.run_id,
            try_number=t.try_number,
            logical_date=t.logical_date,
            run_type=t.run_type,
            run_after=t.run_after,
            clear_number=t.clear_number,
        )
        started_at = t.start_date if t.started_by_worker else None
        if t.started_by_worker and t.airflow_state in PIPELINE_STARTED:
            events.append(run_event(identity, RunState.RUNNING, source="reconciler", started_at=started_at))
        state, error_type = ending
        events.append(
            run_event(
                identity,
                state,
                source="reconciler",
                started_at=started_at,
                ended_at=t.end_date or datetime.now(UTC),
                error_type=error_type,
                error_message=f"Airflow recorded the try as {t.airflow_state}; the task never reported it"
                if error_type
                else None,
                details={"airflow_state": t.airflow_state},
            )
        )
    return events


def missing_events(expected: list[dict[str, Any]], present: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The expected transitions the mirror lacks (``present``: its run_key, try_number, state and
    source rows; what this batch adds counts as present):

    - RUNNING, unless the try has one or the operator ended the try itself (see the module's doc);
    - RETRYING, unless the try has any ending;
    - a final ending, unless the try has a final one (the operator's TIMEOUT or a person's CANCELLED
      is more precise than Airflow's 'failed'); RETRYING is not final."""
    running, ended, final, ended_by_operator = set(), set(), set(), set()
    for row in present:
        key = (row["run_key"], row["try_number"])
        if row["state"] == RunState.RUNNING.value:
            running.add(key)
        elif row["state"] in ENDING_STATES:
            ended.add(key)
            if row["state"] in FINAL_STATES:
                final.add(key)
            if row.get("source") == "operator":
                ended_by_operator.add(key)
    missing = []
    for event in expected:
        key = (event["run_key"], event["try_number"])
        if event["state"] == RunState.RUNNING.value:
            if key in running or key in ended_by_operator:
                continue
            running.add(key)
        elif event["state"] == RunState.RETRYING.value:
            if key in ended:
                continue
            ended.add(key)
        else:
            if key in final:
                continue
            ended.add(key)
            final.add(key)
        missing.append(event)
    return missing


def reconcile(store: Any, *, since: datetime | None = None, until: datetime | None = None) -> ReconcileResult:
    until = until or datetime.now(UTC)
    since = since or until - timedelta(hours=24)
    return reconcile_tries(store, airflow_tries(since, until))


def reconcile_tries(store: Any, tries: list[TryRecord]) -> ReconcileResult:
    """Write what the mirror lacks of what these records of Airflow's prove."""
    expected = expected_events(tries)
    if not expected:
        return ReconcileResult(len(tries), [])
    run_keys = sorted({e["run_key"] for e in expected})
    # A try's transitions are stamped when it started or ended, never a day before the earliest of
    # them that Airflow's records give: the partition filter reads those days, not the whole history.
    since = min(e["event_time"] for e in expected) - timedelta(days=1)
    present = store.query("queries/mirror_states_of_runs.sql", {"run_keys": run_keys, "since": since})
    missing = missing_events(expected, present)
    if missing:
        write_events(store, missing)
    return ReconcileResult(len(tries), missing)
