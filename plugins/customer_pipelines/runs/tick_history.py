"""What became of every tick of a config, a customer or the fleet in a window: the ticks (runs/ticks)
judged against what Airflow's metadata database and the mirror know.

Sources, each read once per call:
- Airflow's ``dag_run`` rows of the window (the runs, their type and state) and its ``job`` rows of
  the scheduler (their heartbeats: an outage is a window no scheduler covered);
- the mirror, for why a run skipped itself (Airflow keeps only "skipped");
- the version logs of the configs and the customer, for when they were held (paused, inactive).

``fleet_ticks`` checks many customers' runnable configs at once from Airflow's records alone (no
holds, no mirror), for the syncer's tick check (runs/tick_watch.py).

Runs in processes that have Airflow's metadata database: the syncer, the command line and the API
server (task code has none)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from customer_pipelines.models import PipelineConfig
from customer_pipelines.runs.ticks import (
    Cause,
    Interval,
    Outcome,
    RunSeen,
    TickEvidence,
    TickRecord,
    account,
    expected_ticks,
    next_tick,
    scheduler_outages,
)
from customer_pipelines.settings import Settings

SCHEDULER_HEARTBEAT_GRACE = timedelta(seconds=30)
"""How long after its latest heartbeat a running scheduler still counts as up (it beats every 5 s)."""
SCHEDULER_STOP_LEAD = timedelta(seconds=30)
"""A tick this close before a scheduler stopped counts as lost to the outage (no loop was left)."""


@dataclass(frozen=True)
class Window:
    since: datetime
    until: datetime

    @classmethod
    def last(cls, hours: float, now: datetime | None = None) -> Window:
        now = now or datetime.now(UTC)
        return cls(now - timedelta(hours=hours), now)


@dataclass(frozen=True)
class ConfigTicks:
    config: PipelineConfig
    records: list[TickRecord]

    def missing(self) -> list[TickRecord]:
        return [r for r in self.records if r.missing]

    def unexplained(self) -> list[TickRecord]:
        """Missed ticks no cause names: a scheduling defect."""
        return [r for r in self.records if r.outcome is Outcome.MISSED and r.cause == Cause.NO_RUN]

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for record in self.records:
            counts[record.outcome.value] += 1
        return dict(counts)


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def airflow_runs(
    session: Any, dag_ids: Iterable[str], window: Window, *, earlier: Mapping[str, datetime] | None = None
) -> dict[str, list[RunSeen]]:
    """dag_id -> the runs of the window's ticks Airflow has; the DAGs of ``earlier`` from their own
    earlier start (the fleet check's ticks still late: a few DAGs, not the fleet, read further back)."""
    from airflow.models.dagrun import DagRun
    from sqlalchemy import and_, or_, select

    ids = sorted(set(dag_ids))
    runs: dict[str, list[RunSeen]] = defaultdict(list)
    if not ids:
        return runs
    since = DagRun.logical_date >= window.since
    if earlier:
        since = or_(since, and_(DagRun.dag_id.in_(sorted(earlier)), DagRun.logical_date >= min(earlier.values())))
    rows = session.execute(
        select(DagRun.dag_id, DagRun.run_id, DagRun.logical_date, DagRun.run_type, DagRun.state, DagRun.start_date)
        .where(DagRun.dag_id.in_(ids))
        .where(since, DagRun.logical_date < window.until)
    )
    for dag_id, run_id, logical_date, run_type, state, start_date in rows:
        runs[dag_id].append(
            RunSeen(_aware(logical_date), run_id, str(run_type), str(state), started_at=_aware(start_date))
        )
    return runs


def paused_dags(session: Any, dag_ids: Iterable[str]) -> set[str]:
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    ids = sorted(set(dag_ids))
    if not ids:
        return set()
    return set(session.scalars(select(DagModel.dag_id).where(DagModel.dag_id.in_(ids), DagModel.is_paused)))


def outages(session: Any, window: Window) -> list[Interval]:
    """The windows no scheduler was heartbeating (Airflow's ``job`` table)."""
    from airflow.jobs.job import Job
    from sqlalchemy import select

    rows = session.execute(
        select(Job.start_date, Job.latest_heartbeat, Job.end_date)
        .where(Job.job_type == "SchedulerJob")
        .where(Job.start_date < window.until)
        .where((Job.latest_heartbeat >= window.since - SCHEDULER_HEARTBEAT_GRACE) | Job.latest_heartbeat.is_(None))
    )
    jobs = [(_aware(start), _aware(beat), _aware(ended)) for start, beat, ended in rows]
    return scheduler_outages(
        jobs, window.since, window.until, grace=SCHEDULER_HEARTBEAT_GRACE, lead=SCHEDULER_STOP_LEAD
    )


def holds_from_history(rows: Sequence[Mapping[str, Any]]) -> dict[str | None, list[Interval]]:
    """config_id (None: the customer) -> the intervals it was held, from its versions oldest first."""
    held_since: dict[str | None, datetime | None] = {}
    holds: dict[str | None, list[Interval]] = defaultdict(list)
    for row in rows:
        key = row["config_id"] if row["kind"] == "config" else None
        at = _aware(row["changed_at"])
        reason = Cause.CONFIG_PAUSED if key is not None else Cause.CUSTOMER_INACTIVE
        since = held_since.get(key)
        if row["runnable"] and since is not None:
            holds[key].append(Interval(since, at, reason))
            held_since[key] = None
        elif not row["runnable"] and since is None:
            held_since[key] = at
    for key, since in held_since.items():
        if since is not None:
            holds[key].append(
                Interval(since, None, Cause.CONFIG_PAUSED if key is not None else Cause.CUSTOMER_INACTIVE)
            )
    return holds


def skip_reasons(store: Any, customer_id: str, config_id: str, window: Window) -> dict[tuple[str, str], str]:
    rows = store.query(
        "queries/skipped_runs.sql",
        {"customer_id": customer_id, "config_id": config_id, "since": window.since, "until": window.until},
    )
    return {(r["dag_id"], r["run_id"]): r["skip_reason"] for r in rows if r["skip_reason"]}


def tick_history(
    configs: Sequence[PipelineConfig],
    window: Window,
    *,
    settings: Settings,
    store: Any,
    now: datetime | None = None,
) -> list[ConfigTicks]:
    """Every tick of ``configs`` (one customer's) in the window, each with its outcome and reason."""
    from customer_pipelines.airflow_db import metadata_session

    now = now or datetime.now(UTC)
    window = Window(window.since, min(window.until, now))
    if not configs or window.until <= window.since:
        return [ConfigTicks(c, []) for c in configs]
    customer_ids = {c.customer_id for c in configs}
    if len(customer_ids) != 1:
        raise ValueError("tick_history takes the configs of one customer")
    customer_id = customer_ids.pop()
    only = configs[0].config_id if len(configs) == 1 else ""
    with metadata_session(settings) as session:
        runs = airflow_runs(session, (c.dag_id for c in configs), window)
        paused = paused_dags(session, (c.dag_id for c in configs))
        down = outages(session, window)
    reasons = skip_reasons(store, customer_id, only, window)
    history = store.query(
        "queries/runnable_history.sql", {"customer_id": customer_id, "config_id": only, "until": window.until}
    )
    holds = holds_from_history(history)
    created: dict[str, datetime] = {}
    for row in history:  # oldest first: the first version of a config is its creation
        if row["kind"] == "config":
            created.setdefault(row["config_id"], _aware(row["changed_at"]))
    late_after = timedelta(minutes=settings.late_after_minutes)
    result = []
    for config in configs:
        seen = [
            RunSeen(r.logical_date, r.run_id, r.run_type, r.state, r.started_at, reasons.get((config.dag_id, r.run_id)))
            for r in runs.get(config.dag_id, [])
        ]
        evidence = TickEvidence(
            runs=seen,
            holds=[*holds.get(config.config_id, []), *holds.get(None, [])],
            outages=down,
            dag_paused=config.dag_id in paused,
        )
        # A tick before the config existed is no tick of it, unless a backfill gave it a run.
        found = _config_ticks(config, window, evidence, now, late_after)
        born = created.get(config.config_id)
        kept = [r for r in found.records if born is None or r.tick >= born or r.run_id is not None]
        result.append(ConfigTicks(config, kept))
    return result


def _config_ticks(
    config: PipelineConfig, window: Window, evidence: TickEvidence, now: datetime, late_after: timedelta
) -> ConfigTicks:
    """One config's ticks in the window, judged against its evidence."""
    ticks = expected_ticks(config.schedule_cron, config.timezone, window.since, window.until)
    records = account(
        ticks,
        evidence,
        now=now,
        late_after=late_after,
        next_tick=next_tick(config.schedule_cron, config.timezone, window.until),
        start_offset=config.start_offset,
    )
    return ConfigTicks(config, records)


@dataclass(frozen=True)
class FleetEvidence:
    """What Airflow's metadata database knows of many configs' ticks (``read_fleet_evidence``)."""

    runs: Mapping[str, Sequence[RunSeen]]
    outages: Sequence[Interval]
    paused: set[str]


EvidenceReader = Callable[[Any, Window, Mapping[str, datetime]], FleetEvidence]
"""(session, window, dag_id -> its own start) -> the evidence; injectable so the accounting is
testable without Airflow's database."""


def read_fleet_evidence(session: Any, window: Window, starts: Mapping[str, datetime]) -> FleetEvidence:
    """One dag_run query for every DAG, the scheduler's outages once, the paused flags once."""
    earlier = {dag_id: since for dag_id, since in starts.items() if since < window.since}
    from_ = min([window.since, *earlier.values()])
    return FleetEvidence(
        runs=airflow_runs(session, starts, window, earlier=earlier),
        outages=outages(session, Window(from_, window.until)),
        paused=paused_dags(session, starts),
    )


def fleet_starts(
    configs: Sequence[PipelineConfig],
    window: Window,
    anchors: Mapping[str, datetime],
    pending: Mapping[str, datetime] | None = None,
) -> dict[str, datetime]:
    """dag_id -> where its ticks start: the window's start, or earlier for a tick still pending
    (``pending``: one still late, so it can still turn missed), never before the config became
    runnable (its timetable fires no tick before its anchor). A config without an anchor is left
    out: its timetable fires no tick at all until a refresh anchors it."""
    pending = pending or {}
    starts = {}
    for config in configs:
        anchor = anchors.get(config.dag_id)
        if anchor is None:
            continue
        since = min(window.since, pending.get(config.dag_id, window.since))
        starts[config.dag_id] = max(since, _aware(anchor))
    return starts


def account_fleet(
    configs: Sequence[PipelineConfig],
    starts: Mapping[str, datetime],
    until: datetime,
    evidence: FleetEvidence,
    *,
    now: datetime,
    late_after: timedelta,
) -> list[ConfigTicks]:
    """Each config's ticks from its start (``fleet_starts``) to ``until``. No holds: only runnable
    configs are checked, and the mirror's skip reasons are left out (no BigQuery per round): a run
    that skipped itself still counts as a run."""
    result = []
    for config in configs:
        since = starts.get(config.dag_id)
        if since is None or since >= until:
            continue
        runs = evidence.runs.get(config.dag_id, ())
        config_evidence = TickEvidence(runs=runs, outages=evidence.outages, dag_paused=config.dag_id in evidence.paused)
        result.append(_config_ticks(config, Window(since, until), config_evidence, now, late_after))
    return result


def fleet_ticks(
    configs: Sequence[PipelineConfig],
    window: Window,
    session: Any,
    *,
    settings: Settings,
    now: datetime,
    anchors: Mapping[str, datetime],
    pending: Mapping[str, datetime] | None = None,
    read: EvidenceReader = read_fleet_evidence,
) -> list[ConfigTicks]:
    """The ticks of many customers' runnable configs (the caller filters) from Airflow's metadata
    database alone, each from its own start (``fleet_starts``) to the window's end."""
    window = Window(window.since, min(window.until, now))
    starts = fleet_starts(configs, window, anchors, pending)
    if not starts:
        return []
    late_after = timedelta(minutes=settings.late_after_minutes)
    return account_fleet(configs, starts, window.until, read(session, window, starts), now=now, late_after=late_after)
