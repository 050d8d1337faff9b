"""Airflow listeners for the transitions the operator's own code never sees.

Where each path is covered (Airflow 3.3), as: path -> mechanism (process) -> mirrored state:

- run starts, succeeds, fails, retries, is skipped (quota, inactive customer) -> the operator itself
  (task) -> RUNNING, COMPLETED, FAILED, RETRYING, SKIPPED;
- execution_timeout -> the operator catching AirflowTaskTimeout (task) -> TIMEOUT (RETRYING if a
  retry is planned);
- worker killed (SIGKILL), zombie / heartbeat timeout -> ``on_task_instance_failed`` from
  ``TaskInstance.handle_failure`` (scheduler) -> FAILED or RETRYING;
- a person marks a task failed / skipped / success -> ``on_task_instance_*`` with
  ``previous_state=None`` (API server) -> CANCELLED / CANCELLED / COMPLETED;
- a DAG run starts -> ``on_dag_run_running`` (scheduler) -> SCHEDULED and QUEUED;
- a DAG run fails before its task ran (marked failed, dagrun_timeout) -> ``on_dag_run_failed``
  (scheduler) -> CANCELLED;
- a process died before it could report -> ``python -m customer_pipelines reconcile``, also run by
  every sync round (syncer) -> what Airflow's own records say.

Listeners run inside Airflow's own processes, so they never wait on BigQuery: they spool the event
locally and a background thread delivers it (the syncer drains whatever is left)."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import Any

from airflow.listeners import hookimpl
from sqlalchemy.orm import object_session

log = logging.getLogger(__name__)
_drain_lock = threading.Lock()
TASK_ID = "run_pipeline"


def _is_ours(dag_id: str, task_id: str | None = TASK_ID) -> bool:
    return "." in dag_id and task_id == TASK_ID


def _in_task_process(task_instance: Any) -> bool:
    """The task process mirrors its own tries through the operator."""
    from airflow.models.taskinstance import TaskInstance

    return not isinstance(task_instance, TaskInstance)


def _state_name(state: Any) -> str | None:
    return getattr(state, "value", state)


def _aware(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def identity_of(
    dag_id: str,
    run_id: str,
    *,
    try_number: int | None,
    logical_date: Any = None,
    run_type: Any = None,
    run_after: Any = None,
    clear_number: int | None = 0,
) -> Any:
    from customer_pipelines.runs.mirror import RunIdentity

    customer_id, _, config_id = dag_id.partition(".")
    return RunIdentity(
        config_id=config_id,
        customer_id=customer_id,
        dag_id=dag_id,
        run_id=run_id,
        task_id=TASK_ID,
        try_number=try_number,
        logical_date=_aware(logical_date),
        scheduled_time=_aware(run_after),
        run_type=run_type or None,
        clear_number=int(clear_number or 0),
    )


def _ti_identity(ti: Any) -> Any:
    dag_run = getattr(ti, "dag_run", None)
    return identity_of(
        ti.dag_id,
        ti.run_id,
        try_number=ti.try_number,
        logical_date=getattr(dag_run, "logical_date", None),
        run_type=getattr(dag_run, "run_type", None),
        run_after=getattr(dag_run, "run_after", None),
        clear_number=getattr(dag_run, "clear_number", 0),
    )


def _emit(*rows: dict[str, Any]) -> None:
    """Spool now (microseconds, never blocks Airflow), deliver in the background, in one batch."""
    from customer_pipelines.bigquery.store import BigQueryStore
    from customer_pipelines.runs.mirror import RunStateMirror
    from customer_pipelines.settings import get_settings

    settings = get_settings()
    mirror = RunStateMirror(BigQueryStore(settings), settings.spool_dir)
    for row in rows:
        mirror.spool(row)

    def drain() -> None:
        if not _drain_lock.acquire(blocking=False):
            return
        try:
            mirror.drain()
        except Exception as exc:  # noqa: BLE001 - the syncer drains what is left
            log.warning("run-state mirror: delivery deferred (%s)", exc)
        finally:
            _drain_lock.release()

    threading.Thread(target=drain, name="cp-mirror-drain", daemon=True).start()


class _Guard:
    """A listener must never break the Airflow process it runs in: errors are logged, not raised.
    (A context manager rather than a decorator: pluggy passes hook arguments by the names in the
    implementation's own signature.)"""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc is not None:
            log.exception("customer pipelines listener failed", exc_info=(exc_type, exc, tb))
        return True


@hookimpl
def on_task_instance_failed(previous_state: Any, task_instance: Any, error: Any = None) -> None:
    with _Guard():
        from customer_pipelines.runs.mirror import ErrorType, RunState, run_event

        if not _is_ours(task_instance.dag_id, task_instance.task_id) or _in_task_process(task_instance):
            return
        identity = _ti_identity(task_instance)
        if previous_state is None:  # set by a person through the API / UI
            message = str(error) if error else None
            _marked_by_a_person(None, task_instance, RunState.CANCELLED, {"marked_failed_by_person": True}, message)
            return
        # the process was killed or declared a zombie: the platform lost the worker
        retrying = _state_name(task_instance.state) == "up_for_retry"
        _emit(
            run_event(
                identity,
                RunState.RETRYING if retrying else RunState.FAILED,
                source="listener:scheduler",
                started_at=_aware(task_instance.start_date),
                ended_at=_aware(task_instance.end_date) or datetime.now(UTC),
                error_type=ErrorType.PLATFORM.value,
                error_message=str(error) if error else None,
            )
        )


def _marked_by_a_person(
    previous_state: Any, task_instance: Any, state: Any, details: dict[str, Any], error_message: str | None = None
) -> None:
    """The API server calls the task-instance hooks with previous_state=None when a person sets a state.

    Each mark is its own event at its own time (now): a person can mark one try A, B and A again,
    and Airflow keeps the try's first end_date through every re-mark (``TaskInstance.set_state``),
    so neither the state nor end_date tells two marks apart."""
    from customer_pipelines.runs.mirror import ErrorType, RunState, run_event

    if previous_state is not None or not _is_ours(task_instance.dag_id, task_instance.task_id):
        return
    if _in_task_process(task_instance):
        return
    _emit(
        run_event(
            _ti_identity(task_instance),
            state,
            source="listener:manual",
            event_time=datetime.now(UTC),
            ended_at=_aware(task_instance.end_date) or datetime.now(UTC),
            error_type=None if state is RunState.COMPLETED else ErrorType.MANUAL.value,
            error_message=error_message,
            details=details,
            each_occurrence=True,
        )
    )


@hookimpl
def on_task_instance_success(previous_state: Any, task_instance: Any) -> None:
    from customer_pipelines.runs.mirror import RunState

    with _Guard():
        _marked_by_a_person(previous_state, task_instance, RunState.COMPLETED, {"marked_success_by_person": True})


@hookimpl
def on_task_instance_skipped(previous_state: Any, task_instance: Any) -> None:
    from customer_pipelines.runs.mirror import RunState

    with _Guard():
        _marked_by_a_person(previous_state, task_instance, RunState.CANCELLED, {"marked_skipped_by_person": True})


@hookimpl
def on_dag_run_running(dag_run: Any, msg: str) -> None:
    with _Guard():
        from customer_pipelines.runs.mirror import RunState, run_event

        if not _is_ours(dag_run.dag_id):
            return
        identity = identity_of(
            dag_run.dag_id,
            dag_run.run_id,
            try_number=None,
            logical_date=dag_run.logical_date,
            run_type=dag_run.run_type,
            run_after=dag_run.run_after,
            # a clear (or a backfill reprocessing the run) raises it and resets queued_at and
            # start_date: the new execution's SCHEDULED and QUEUED are new transitions
            clear_number=getattr(dag_run, "clear_number", 0),
        )
        created = _aware(getattr(dag_run, "queued_at", None)) or _aware(dag_run.run_after) or datetime.now(UTC)
        _emit(
            run_event(identity, RunState.SCHEDULED, source="listener:scheduler", event_time=created),
            run_event(
                identity,
                RunState.QUEUED,
                source="listener:scheduler",
                event_time=_aware(dag_run.start_date) or datetime.now(UTC),
            ),
        )


@hookimpl
def on_dag_run_failed(dag_run: Any, msg: str) -> None:
    with _Guard():
        from customer_pipelines.runs.mirror import ErrorType, RunState, run_event

        if not _is_ours(dag_run.dag_id):
            return
        # The API server says "Dag Run's state was manually set to `failed`." (Airflow's
        # services/public/dag_run.py); the scheduler says why it failed the run (e.g. "timed_out").
        error_type = ErrorType.MANUAL if "manually" in (msg or "") else ErrorType.PLATFORM
        # The caller's own session, never a new one: in the scheduler a session of our own would
        # commit inside its critical section ("UNEXPECTED COMMIT - THIS WILL BREAK HA LOCKS!") and
        # stop the scheduler. Without one, the reconciler fills the gap.
        session = object_session(dag_run)
        if session is None:
            log.warning("on_dag_run_failed: %s/%s is detached; left to reconcile", dag_run.dag_id, dag_run.run_id)
            return
        for ti in dag_run.get_task_instances(session=session):
            # Ended on its own (mirrored by the operator or the TI listeners). A skipped TI is not
            # among them: a run whose only task skipped itself succeeds, so in a failed run the skip
            # is the failure's own (Airflow skips the unfinished tasks of a run marked or timed out).
            if ti.task_id != TASK_ID or _state_name(ti.state) in ("success", "failed", "up_for_retry"):
                continue
            _emit(
                run_event(
                    _ti_identity(ti),
                    RunState.CANCELLED,
                    source="listener:scheduler",
                    ended_at=_aware(dag_run.end_date) or datetime.now(UTC),
                    error_type=error_type.value,
                    error_message=msg or None,
                )
            )
