"""The seeds' fleet alerts, evaluated by the syncer each round and sent through the notifier
(``CP_ALERT_NOTIFIER``, besides the log), each raised once per episode and cleared when it ends:

- ``RUNS_WAITING``: more runs waiting to start than ``CP_ALERT_WAITING_RUNS`` (the seeds: queue > 1000);
- ``RUN_TOO_LONG``: a run whose task has run longer than ``CP_ALERT_RUNNING_MINUTES`` (one per run);
- ``FAILURE_RATE``: the fleet's, or a customer's, failed share of the runs finished in the last
  ``CP_ALERT_FAILURE_WINDOW_MINUTES`` above ``CP_ALERT_FAILURE_RATE`` (judged from
  ``CP_ALERT_FAILURE_MIN_RUNS`` finished runs);
- ``QUOTA_REACHED``: a customer whose runs today reached its daily quota (cleared the next day, or
  when its plan's limit rises).

An episode is a condition's key (the kind, and the customer or run it concerns) from the round that
first finds it to the first round that does not; the open episodes are kept in the state directory
(``fleet-alerts.json``), so a restarted syncer neither raises them again nor forgets to clear them.
The facts come from Airflow's metadata database (runs, tasks) and the quota ledger, read once per
round; the conditions are a pure function of them."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from customer_pipelines.private_files import ensure_state_dir, write_private
from customer_pipelines.runs.failure_policy import Alert, Notifier, notifier_from_settings
from customer_pipelines.settings import Settings

log = logging.getLogger(__name__)

STATE_FILE = "fleet-alerts.json"
FLEET = "*"
"""The key of the whole fleet among the failure-rate outcomes."""


@dataclass(frozen=True)
class FleetFacts:
    """What one round knows of the fleet."""

    waiting_runs: int = 0
    """Runs created but not started: queued runs, and tasks scheduled or queued."""
    running_since: Mapping[str, datetime] = field(default_factory=dict)
    """``dag_id/run_id`` -> when its running task started (only those running longer than the threshold)."""
    outcomes: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """customer_id (``FLEET`` for all) -> (failed, finished) runs in the failure window."""
    used_today: Mapping[str, int] = field(default_factory=dict)
    """customer_id -> executions counted against its daily quota today."""
    daily_limits: Mapping[str, int | None] = field(default_factory=dict)
    """customer_id -> its plan's daily run limit (None: unlimited)."""


@dataclass(frozen=True)
class Condition:
    key: str
    kind: str
    customer_id: str
    message: str


def conditions(facts: FleetFacts, settings: Settings, now: datetime) -> dict[str, Condition]:
    """Every alert condition that holds, by key."""
    found: list[Condition] = []
    if facts.waiting_runs > settings.alert_waiting_runs:
        found.append(
            Condition(
                "RUNS_WAITING",
                "RUNS_WAITING",
                "",
                f"{facts.waiting_runs} runs waiting to start (threshold {settings.alert_waiting_runs})",
            )
        )
    limit = timedelta(minutes=settings.alert_running_minutes)
    for run, since in facts.running_since.items():
        if now - since > limit:
            minutes = (now - since).total_seconds() / 60
            found.append(
                Condition(
                    f"RUN_TOO_LONG:{run}",
                    "RUN_TOO_LONG",
                    run.split(".", 1)[0],
                    f"run {run} running for {minutes:.0f} min (threshold {settings.alert_running_minutes:g})",
                )
            )
    for customer, (failed, finished) in facts.outcomes.items():
        if finished >= settings.alert_failure_min_runs and failed / finished > settings.alert_failure_rate:
            who = "the fleet" if customer == FLEET else f"customer {customer}"
            found.append(
                Condition(
                    f"FAILURE_RATE:{customer}",
                    "FAILURE_RATE",
                    "" if customer == FLEET else customer,
                    f"{who}: {failed} of {finished} runs failed in the last "
                    f"{settings.alert_failure_window_minutes:g} min ({failed / finished:.0%}, "
                    f"threshold {settings.alert_failure_rate:.0%})",
                )
            )
    for customer, used in facts.used_today.items():
        quota = facts.daily_limits.get(customer)
        if quota is not None and used >= quota:
            found.append(
                Condition(
                    f"QUOTA_REACHED:{customer}",
                    "QUOTA_REACHED",
                    customer,
                    f"customer {customer} reached its daily quota: {used} of {quota} runs today",
                )
            )
    return {c.key: c for c in found}


@dataclass
class AlertRound:
    raised: list[Condition] = field(default_factory=list)
    cleared: list[dict[str, Any]] = field(default_factory=list)
    open: dict[str, dict[str, Any]] = field(default_factory=dict)


class AlertEpisodes:
    """The open episodes, kept in ``<state_dir>/fleet-alerts.json`` between rounds."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / STATE_FILE

    def open(self) -> dict[str, dict[str, Any]]:
        try:
            value = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.error("unreadable %s: fleet alerts start over (open ones are raised again)", self.path)
            return {}
        return value if isinstance(value, dict) else {}

    def update(self, holding: Mapping[str, Condition], now: datetime) -> AlertRound:
        """Open an episode for each condition not open yet, close each open one that no longer holds."""
        before = self.open()
        result = AlertRound()
        for key, condition in holding.items():
            if key in before:
                result.open[key] = {**before[key], "message": condition.message}
            else:
                result.raised.append(condition)
                result.open[key] = {
                    "kind": condition.kind,
                    "customer_id": condition.customer_id,
                    "message": condition.message,
                    "raised_at": now.isoformat(),
                }
        result.cleared = [{"key": key, **episode} for key, episode in before.items() if key not in holding]
        if result.open != before:
            # ensure_state_dir, not private_dir: the embedded PostgreSQL keeps its traversal (0710).
            write_private(ensure_state_dir(self.state_dir) / STATE_FILE, json.dumps(result.open, sort_keys=True))
        return result


def evaluate(
    settings: Settings,
    facts: FleetFacts,
    *,
    notifier: Notifier | None = None,
    now: datetime | None = None,
) -> AlertRound:
    """One round: the episodes opened and closed by these facts, each sent to the notifier once."""
    now = now or datetime.now(UTC)
    notifier = notifier_from_settings(settings) if notifier is None else notifier
    result = AlertEpisodes(settings.state_dir).update(conditions(facts, settings, now), now)
    for condition in result.raised:
        notifier(Alert(condition.kind, "", condition.customer_id, 0, condition.message))
    for episode in result.cleared:
        message = f"{episode['kind']} ended: {episode.get('message', '')} (raised {episode.get('raised_at')})"
        notifier(Alert(str(episode["kind"]), "", str(episode.get("customer_id", "")), 0, message, state="CLEARED"))
    return result


def gather_facts(settings: Settings, daily_limits: Mapping[str, int | None], now: datetime) -> FleetFacts:
    """The round's facts from Airflow's metadata database and (when configured) the quota ledger."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import DagRunState, TaskInstanceState
    from sqlalchemy import func, or_, select

    from customer_pipelines.airflow_db import metadata_session

    in_fleet = TaskInstance.pool.startswith(settings.pool_prefix)
    since = now - timedelta(minutes=settings.alert_failure_window_minutes)
    longer_than = now - timedelta(minutes=settings.alert_running_minutes)
    with metadata_session(settings) as session:
        queued_runs = session.scalar(select(func.count()).select_from(DagRun).where(DagRun.state == DagRunState.QUEUED))
        waiting_tasks = session.scalar(
            select(func.count())
            .select_from(TaskInstance)
            .where(in_fleet, TaskInstance.state.in_((TaskInstanceState.SCHEDULED, TaskInstanceState.QUEUED)))
        )
        running = session.execute(
            select(TaskInstance.dag_id, TaskInstance.run_id, TaskInstance.start_date).where(
                in_fleet, TaskInstance.state == TaskInstanceState.RUNNING, TaskInstance.start_date < longer_than
            )
        ).all()
        finished = session.execute(
            select(DagRun.dag_id, DagRun.state, func.count())
            .where(
                DagRun.end_date >= since,
                or_(DagRun.state == DagRunState.SUCCESS, DagRun.state == DagRunState.FAILED),
            )
            .group_by(DagRun.dag_id, DagRun.state)
        ).all()
    outcomes: dict[str, list[int]] = {}
    for dag_id, state, count in finished:
        customer = dag_id.split(".", 1)[0] if "." in dag_id else None
        for key in (FLEET, customer):
            if key is None:
                continue
            tally = outcomes.setdefault(key, [0, 0])
            tally[0] += count if state == DagRunState.FAILED else 0
            tally[1] += count
    used: dict[str, int] = {}
    if settings.quota_db_url:
        from customer_pipelines.runs.quota import QuotaLedger

        used = QuotaLedger(settings).used_on(now.astimezone(UTC).date())
    return FleetFacts(
        waiting_runs=int(queued_runs or 0) + int(waiting_tasks or 0),
        running_since={f"{dag_id}/{run_id}": start for dag_id, run_id, start in running if start is not None},
        outcomes={key: (failed, total) for key, (failed, total) in outcomes.items()},
        used_today=used,
        daily_limits=dict(daily_limits),
    )
