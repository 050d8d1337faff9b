"""Backfills of a customer's configs with Airflow 3's own backfill mechanism (the models behind
``/api/v2/backfills``): one Airflow backfill per config, over the ticks of a window, in the process
that has Airflow's metadata database (the API server, the command line).

What we add to Airflow's backfill:
- capacity: a backfill has its own ``max_active_runs`` (``backfill_share``: half the customer's pool,
  at most ``CP_BACKFILL_MAX_ACTIVE_RUNS``, at least 1), counted apart from the DAG's live runs, so it
  always progresses (it does not starve behind live runs); its tasks rank below every live task in
  the customer's pool (``backfill_task_priority``, Airflow's task_instance_mutation_hook), so a free
  slot goes to a live run first (a backfill does not delay them);
- quotas: a backfilled run is an execution like any other: the operator's quota gate counts it,
  and once the customer's daily quota is used the rest skip with QUOTA_EXCEEDED. The dry run says
  how many of the planned runs the remaining quota covers;
- refusals before anything is written: a config that cannot run now (paused, customer inactive) or
  that has a backfill in progress is refused with the reason, and no backfill of the request is
  created;
- cancel (airflow 72337: Airflow's cancel fails only the queued runs and leaves running ones, and
  their queued tasks, behind): the backfill is paused, its queued runs and its running runs'
  unfinished tasks fail, and the DAG's paused flag is as it was before the cancel.

``reprocess_behavior`` is Airflow's: ``none`` (default) creates runs only for ticks with no run, so
running a backfill twice creates nothing new; ``failed`` also reruns ticks whose run failed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from customer_pipelines.models import PipelineConfig

REPROCESS_BEHAVIORS = ("none", "failed")
BACKFILL_PRIORITY_OFFSET = 1000
"""Subtracted from a backfill task's priority_weight: live weights are 10..103 (factory.py), so every
backfill task ranks below every live one and backfills keep their order among themselves."""


def backfill_share(pool_slots: int | None, setting: int) -> int:
    """Runs one backfill may run at once: half the customer's pool, within [1, setting]."""
    return max(1, min(setting, (pool_slots or 2) // 2))


def backfill_task_priority(task_instance: Any) -> None:
    """Airflow's ``task_instance_mutation_hook`` (plugins/airflow_local_settings.py): a task of a
    backfill run gets a priority below every live task, once (the hook may see a task again)."""
    run_id = getattr(task_instance, "run_id", None) or ""
    weight = getattr(task_instance, "priority_weight", None)
    if run_id.startswith("backfill__") and weight is not None and weight > -BACKFILL_PRIORITY_OFFSET // 2:
        task_instance.priority_weight = weight - BACKFILL_PRIORITY_OFFSET


class BackfillRefused(ValueError):
    """The request cannot be backfilled; ``field`` names the part of the request, ``reason`` why."""

    def __init__(self, field: str, reason: str, *, status: int = 409) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class PlannedBackfill:
    config_id: str
    dag_id: str
    ticks: list[datetime]
    """The ticks Airflow would create (or rerun) a run for."""


@dataclass
class BackfillPlan:
    customer_id: str
    since: datetime
    until: datetime
    reprocess_behavior: str
    configs: list[PlannedBackfill]
    quota_remaining_today: int | None = None
    """Executions the customer may still start today (None: no daily limit)."""
    created: dict[str, int] = field(default_factory=dict)
    """config_id -> Airflow backfill id, once created."""

    @property
    def runs(self) -> int:
        return sum(len(c.ticks) for c in self.configs)

    @property
    def over_quota(self) -> int:
        """Planned runs beyond today's remaining quota: they will skip with QUOTA_EXCEEDED."""
        if self.quota_remaining_today is None:
            return 0
        return max(0, self.runs - self.quota_remaining_today)

    def as_dict(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "from": self.since.isoformat(),
            "to": self.until.isoformat(),
            "reprocess_behavior": self.reprocess_behavior,
            "runs": self.runs,
            "quota_remaining_today": self.quota_remaining_today,
            "runs_over_quota": self.over_quota,
            "configs": [
                {
                    "config_id": c.config_id,
                    "dag_id": c.dag_id,
                    "runs": len(c.ticks),
                    "ticks": [t.isoformat() for t in c.ticks],
                    "backfill_id": self.created.get(c.config_id),
                }
                for c in self.configs
            ],
        }


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


OLDEST_TICK = timedelta(days=5 * 366)
"""How far back a backfill may reach."""


def check_window(since: datetime, until: datetime, reprocess_behavior: str) -> None:
    """Refuse (422, naming the field) a window that cannot be backfilled."""
    if since.tzinfo is None or until.tzinfo is None:
        raise BackfillRefused(
            "from" if since.tzinfo is None else "to", "needs a timezone (e.g. 2026-12-01T00:00:00Z)", status=422
        )
    if since > until:
        raise BackfillRefused("from", "must not be after 'to'", status=422)
    now = datetime.now(UTC)
    if since >= now:
        raise BackfillRefused("from", "is in the future: only past ticks can be backfilled", status=422)
    if since < now - OLDEST_TICK:
        raise BackfillRefused("from", f"is more than {OLDEST_TICK.days} days ago", status=422)
    if reprocess_behavior not in REPROCESS_BEHAVIORS:
        raise BackfillRefused("reprocess_behavior", f"must be one of {', '.join(REPROCESS_BEHAVIORS)}", status=422)


def plan_backfill(
    session: Any,
    customer_id: str,
    configs: Sequence[PipelineConfig],
    since: datetime,
    until: datetime,
    *,
    reprocess_behavior: str = "none",
    quota_remaining_today: int | None = None,
) -> BackfillPlan:
    """The dry run: per config, the ticks of [since, until] Airflow's backfill would create runs for
    (Airflow's own dry run, ``reprocess_behavior`` applied). Writes nothing."""
    from airflow.exceptions import AirflowException, DagNotFound
    from airflow.models.backfill import ReprocessBehavior, _do_dry_run

    check_window(since, until, reprocess_behavior)
    planned = []
    for config in configs:
        try:
            infos = _do_dry_run(
                dag_id=config.dag_id,
                from_date=since,
                to_date=until,
                reverse=False,
                reprocess_behavior=ReprocessBehavior(reprocess_behavior),
                session=session,
            )
            ticks = [_aware(info.logical_date) for info in infos if info.logical_date is not None]
        except DagNotFound:
            raise BackfillRefused(
                "config_ids", f"config {config.config_id} has no DAG in Airflow yet (it is parsed within a minute)"
            ) from None
        except AirflowException as exc:
            raise BackfillRefused("config_ids", f"Airflow refused config {config.config_id}: {exc}") from None
        planned.append(PlannedBackfill(config.config_id, config.dag_id, ticks))
    return BackfillPlan(customer_id, since, until, reprocess_behavior, planned, quota_remaining_today)


def _active_backfills(session: Any, dag_ids: Sequence[str]) -> dict[str, int]:
    from airflow.models.backfill import Backfill
    from sqlalchemy import select

    rows = session.execute(
        select(Backfill.dag_id, Backfill.id).where(Backfill.dag_id.in_(dag_ids), Backfill.completed_at.is_(None))
    )
    return {dag_id: backfill_id for dag_id, backfill_id in rows}


def create_backfills(
    session: Any,
    plan: BackfillPlan,
    *,
    max_active_runs: int,
    triggering_user: str,
) -> BackfillPlan:
    """Create the plan's backfills (configs with no tick to run are left out). Refused as a whole,
    before anything is written, when one of its DAGs has a backfill in progress."""
    from airflow.exceptions import AirflowException
    from airflow.models.backfill import NoBackfillRunsToCreate, ReprocessBehavior, _create_backfill

    todo = [c for c in plan.configs if c.ticks]
    active = _active_backfills(session, [c.dag_id for c in todo])
    if active:
        busy = ", ".join(f"{c.config_id} (backfill {active[c.dag_id]})" for c in todo if c.dag_id in active)
        raise BackfillRefused("config_ids", f"a backfill is in progress for {busy}: wait for it or cancel it")
    session.commit()  # Airflow's _create_backfill opens its own sessions
    for config in todo:
        try:
            backfill = _create_backfill(
                dag_id=config.dag_id,
                from_date=plan.since,
                to_date=plan.until,
                max_active_runs=max_active_runs,
                reverse=False,
                dag_run_conf={},
                triggering_user_name=triggering_user,
                reprocess_behavior=ReprocessBehavior(plan.reprocess_behavior),
            )
        except (AirflowException, NoBackfillRunsToCreate) as exc:
            # A race with another request (a backfill created since the check above): the backfills
            # already created stay and are named, this one is refused.
            made = ", ".join(f"{c} (backfill {b})" for c, b in plan.created.items()) or "none"
            raise BackfillRefused(
                "config_ids", f"Airflow refused config {config.config_id}: {exc}; created before it: {made}"
            ) from None
        plan.created[config.config_id] = backfill.id
    return plan


def backfill_status(session: Any, backfill_id: int) -> dict[str, Any] | None:
    """A backfill and its runs by state; None when there is no such backfill."""
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dagrun import DagRun
    from sqlalchemy import select

    backfill = session.get(Backfill, backfill_id)
    if backfill is None:
        return None
    states = Counter(
        str(state)
        for (state,) in session.execute(
            select(DagRun.state)
            .join(BackfillDagRun, BackfillDagRun.dag_run_id == DagRun.id)
            .where(BackfillDagRun.backfill_id == backfill_id)
        )
    )
    not_created = Counter(
        str(reason)
        for (reason,) in session.execute(
            select(BackfillDagRun.exception_reason).where(
                BackfillDagRun.backfill_id == backfill_id, BackfillDagRun.exception_reason.is_not(None)
            )
        )
    )
    return {
        "backfill_id": backfill.id,
        "dag_id": backfill.dag_id,
        "from": _aware(backfill.from_date).isoformat(),
        "to": _aware(backfill.to_date).isoformat(),
        "reprocess_behavior": str(backfill.reprocess_behavior),
        "max_active_runs": backfill.max_active_runs,
        "is_paused": bool(backfill.is_paused),
        "created_at": _aware(backfill.created_at).isoformat(),
        "completed_at": _aware(backfill.completed_at).isoformat() if backfill.completed_at else None,
        "triggering_user": backfill.triggering_user_name,
        "runs": dict(states),
        "runs_total": sum(states.values()),
        "not_created": dict(not_created),
    }


def cancel_backfill(session: Any, backfill_id: int) -> dict[str, Any] | None:
    """Stop a backfill and leave nothing of it queued or running (see the module's docstring)."""
    from airflow._shared.timezones import timezone
    from airflow.models.backfill import Backfill, BackfillDagRun
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import DagRunState, State, TaskInstanceState
    from sqlalchemy import or_, select, update

    backfill = session.get(Backfill, backfill_id)
    if backfill is None:
        return None
    dag = session.get(DagModel, backfill.dag_id)
    was_paused = dag.is_paused if dag is not None else None
    backfill.is_paused = True  # first: the scheduler starts none of its runs from now on
    session.commit()
    runs = select(BackfillDagRun.dag_run_id).where(BackfillDagRun.backfill_id == backfill_id)
    unfinished = session.scalars(
        select(DagRun).where(DagRun.id.in_(runs), DagRun.state.in_([DagRunState.QUEUED, DagRunState.RUNNING]))
    ).all()
    for run in unfinished:
        session.execute(
            update(TaskInstance)
            .where(
                TaskInstance.dag_id == run.dag_id,
                TaskInstance.run_id == run.run_id,
                or_(
                    TaskInstance.state.in_([s for s in State.unfinished if s is not None]), TaskInstance.state.is_(None)
                ),
            )
            .values(state=TaskInstanceState.FAILED, end_date=timezone.utcnow())
            .execution_options(synchronize_session=False)
        )
        run.state = DagRunState.FAILED
        run.end_date = timezone.utcnow()
    backfill.completed_at = timezone.utcnow()
    if dag is not None and dag.is_paused != was_paused:
        dag.is_paused = was_paused
    session.commit()
    status = backfill_status(session, backfill_id)
    assert status is not None
    return {**status, "cancelled_runs": len(unfinished)}
