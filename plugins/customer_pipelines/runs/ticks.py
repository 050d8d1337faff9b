"""Every cron tick of a config in a window, and what became of it.

``expected_ticks`` computes the ticks with croniter in the config's timezone, independently of
Airflow's timetable but with its DST rules (a test holds the two together): a wall-clock time that
does not exist (spring forward) fires at the same offset after the gap; one that exists twice (fall
back) fires once, at its second occurrence; a schedule that fires every hour steps in elapsed time,
so the repeated hour fires twice.

``account`` gives each tick one outcome from what is known about it:

- ``ran``: a run exists and did not skip (its run id and Airflow state; a run that failed finally is
  also *missing*, cause ``RUN_FAILED``);
- ``skipped``: on purpose: the run skipped itself (``QUOTA_EXCEEDED``, ``CUSTOMER_INACTIVE``, ...) or
  no run exists because the config, its customer or its DAG was held at the tick;
- ``late``: due, not started after the threshold, and still able to start (a queued run, or the
  config's newest tick without a run: the scheduler may still create it);
- ``missed``: no run and none will come (a later tick has run, catchup is off), with its cause:
  ``SCHEDULER_DOWN`` when no scheduler was heartbeating at the tick, else ``NO_RUN`` (no cause we can
  name: a scheduling defect, alerted by the syncer);
- ``due``: due, within the threshold, nothing yet.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from croniter import croniter


class Outcome(StrEnum):
    RAN = "ran"
    SKIPPED = "skipped"
    LATE = "late"
    MISSED = "missed"
    DUE = "due"


class Cause(StrEnum):
    """Why a tick has no successful run (beyond the run's own skip reasons)."""

    CONFIG_PAUSED = "CONFIG_PAUSED"
    CUSTOMER_INACTIVE = "CUSTOMER_INACTIVE"
    DAG_PAUSED = "DAG_PAUSED"
    SCHEDULER_DOWN = "SCHEDULER_DOWN"
    NO_RUN = "NO_RUN"
    RUN_FAILED = "RUN_FAILED"
    NOT_STARTED = "NOT_STARTED"


def _localize(naive: datetime, zone: ZoneInfo) -> datetime:
    """Airflow's make_aware: a repeated wall-clock time is its second occurrence (fold=1); a
    missing one keeps the offset from before the gap (fold=0), i.e. lands after it."""
    first, second = naive.replace(tzinfo=zone, fold=0), naive.replace(tzinfo=zone, fold=1)
    if first.utcoffset() == second.utcoffset():
        return first
    exists = first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive
    return second if exists else first


@lru_cache(maxsize=8192)
def _parsed(expression: str) -> croniter:
    """The expression parsed once: parsing is most of a croniter's cost (the syncer's tick check
    walks every runnable config's ticks each round)."""
    return croniter(expression)


def _schedule(expression: str, start: datetime) -> croniter:
    """A croniter of ``expression`` from ``start``, without parsing it again."""
    schedule = copy.copy(_parsed(expression))
    schedule.set_current(start, force=True)
    return schedule


def _covers_every_hour(expression: str) -> bool:
    return _parsed(expression).expanded[1] == ["*"]


def expected_ticks(
    expression: str, timezone: str, since: datetime, until: datetime, *, limit: int | None = None
) -> list[datetime]:
    """The ticks t of the cron ``expression`` in ``timezone`` with since <= t < until, in UTC (the
    first ``limit`` of them, when given)."""
    zone = ZoneInfo(timezone)
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    ticks: list[datetime] = []
    if _covers_every_hour(expression):
        # Elapsed-time steps from the tick before the window (Airflow's fold-hour rule).
        current = since - timedelta(microseconds=1)
        while True:
            local = current.astimezone(zone)
            naive = local.replace(tzinfo=None)
            step = _schedule(expression, naive).get_next(datetime) - naive
            current = current + step
            if current >= until or len(ticks) == limit:
                return ticks
            ticks.append(current)
    start = since.astimezone(zone).replace(tzinfo=None) - timedelta(hours=3)  # before any DST shift
    schedule = _schedule(expression, start)
    while True:
        tick = _localize(schedule.get_next(datetime), zone).astimezone(UTC)
        if tick >= until or len(ticks) == limit:
            return ticks
        if tick >= since and (not ticks or tick > ticks[-1]):
            ticks.append(tick)


def next_tick(expression: str, timezone: str, moment: datetime) -> datetime | None:
    """The first tick at or after ``moment`` (None: none within a year and a day, e.g. 30 February)."""
    ticks = expected_ticks(expression, timezone, moment, moment + timedelta(days=366), limit=1)
    return ticks[0] if ticks else None


@dataclass(frozen=True)
class RunSeen:
    """A run Airflow (or the mirror) knows for a tick."""

    logical_date: datetime
    run_id: str
    run_type: str
    state: str
    """Airflow's DAG-run state: queued, running, success, failed."""
    started_at: datetime | None = None
    skip_reason: str | None = None
    """The mirror's reason when the run skipped itself (QUOTA_EXCEEDED, ...)."""


@dataclass(frozen=True)
class Interval:
    """[since, until) with a reason: a hold (config paused, customer inactive) or a scheduler outage;
    ``until`` None: still open."""

    since: datetime
    until: datetime | None
    reason: str

    def covers(self, moment: datetime) -> bool:
        return self.since <= moment and (self.until is None or moment < self.until)

    def overlaps(self, first: datetime, last: datetime) -> bool:
        """Whether it covers any moment of [first, last]."""
        return self.since <= last and (self.until is None or first < self.until)


@dataclass(frozen=True)
class TickRecord:
    tick: datetime
    outcome: Outcome
    reason: str | None = None
    run_id: str | None = None
    run_state: str | None = None
    run_type: str | None = None

    @property
    def missing(self) -> bool:
        """No successful run, whatever the reason (the missed-runs report's rows)."""
        if self.outcome is Outcome.RAN:
            return self.run_state == "failed"
        return self.outcome is not Outcome.DUE

    @property
    def cause(self) -> str | None:
        if self.outcome is Outcome.RAN and self.run_state == "failed":
            return Cause.RUN_FAILED
        return self.reason

    def as_dict(self) -> dict[str, object]:
        return {
            "tick": self.tick.isoformat(),
            "outcome": self.outcome.value,
            "reason": self.cause,
            "run_id": self.run_id,
            "run_state": self.run_state,
            "run_type": self.run_type,
        }


@dataclass(frozen=True)
class TickEvidence:
    """What is known about one config's window: its runs, its holds, the scheduler's outages."""

    runs: Sequence[RunSeen] = ()
    holds: Sequence[Interval] = ()
    outages: Sequence[Interval] = ()
    dag_paused: bool = False
    """The DAG is paused in Airflow now (by a person or the syncer)."""
    extra: dict[str, object] = field(default_factory=dict)


def _latest_run_of_tick(runs: Iterable[RunSeen]) -> dict[datetime, RunSeen]:
    """Per logical date, the run to judge it by: a backfill or a later execution replaces the first."""
    chosen: dict[datetime, RunSeen] = {}
    for run in runs:
        key = run.logical_date.astimezone(UTC)
        previous = chosen.get(key)
        if previous is None or (run.started_at or key) >= (previous.started_at or key):
            chosen[key] = run
    return chosen


def account(
    ticks: Sequence[datetime],
    evidence: TickEvidence,
    *,
    now: datetime,
    late_after: timedelta,
    next_tick: datetime | None = None,
    start_offset: timedelta = timedelta(0),
) -> list[TickRecord]:
    """One record per tick (see the module's docstring); ``next_tick`` is the first tick after the
    window: once its run is due, a tick of the window without a run can no longer start (catchup is
    off). ``start_offset``: the config's start window offset; a tick's run is due that long after
    the tick (its ``run_after``), so lateness, supersession and outages are judged from then, while
    the record (and the run matched to it, by logical date) stays the tick's."""
    runs = _latest_run_of_tick(evidence.runs)
    newest_run = max(runs, default=None)
    records = []
    for index, tick in enumerate(ticks):
        run = runs.get(tick)
        due = tick + start_offset
        overdue = now - due > late_after
        if run is not None:
            records.append(_record_of_run(tick, run, overdue))
            continue
        later = ticks[index + 1] if index + 1 < len(ticks) else next_tick
        superseded = (newest_run is not None and newest_run > tick) or (
            later is not None and later + start_offset <= now
        )
        # A hold at any moment from the tick to its run's start keeps the run from being created.
        hold = next((h for h in evidence.holds if h.overlaps(tick, due)), None)
        outage = next((o for o in evidence.outages if o.covers(due)), None)
        if hold is not None:
            records.append(TickRecord(tick, Outcome.SKIPPED, hold.reason))
        elif evidence.dag_paused and (newest_run is None or newest_run < tick):
            records.append(TickRecord(tick, Outcome.SKIPPED, Cause.DAG_PAUSED))
        elif superseded:
            records.append(TickRecord(tick, Outcome.MISSED, Cause.SCHEDULER_DOWN if outage else Cause.NO_RUN))
        elif overdue:
            records.append(TickRecord(tick, Outcome.LATE, Cause.SCHEDULER_DOWN if outage else Cause.NOT_STARTED))
        else:
            records.append(TickRecord(tick, Outcome.DUE))
    return records


def _record_of_run(tick: datetime, run: RunSeen, overdue: bool) -> TickRecord:
    if run.skip_reason:
        outcome, reason = Outcome.SKIPPED, run.skip_reason
    elif run.state == "queued" and run.started_at is None and overdue:
        outcome, reason = Outcome.LATE, Cause.NOT_STARTED
    else:
        outcome, reason = Outcome.RAN, None
    return TickRecord(tick, outcome, reason, run.run_id, run.state, run.run_type)


def scheduler_outages(
    jobs: Iterable[tuple[datetime, datetime | None, datetime | None]],
    since: datetime,
    until: datetime,
    *,
    grace: timedelta,
    lead: timedelta = timedelta(0),
) -> list[Interval]:
    """The windows in [since, until) no scheduler covered, from its jobs' (start, latest heartbeat,
    end) (Airflow's ``job`` table): a job covers from its start to its end, or, still running or
    killed, to ``grace`` after its latest heartbeat. Each outage starts ``lead`` early: a tick just
    before a scheduler stopped may have had no loop left to create its run."""
    covered = sorted((start, ended or (beat or start) + grace) for start, beat, ended in jobs)
    gaps: list[tuple[datetime, datetime | None]] = []
    cursor = since
    for start, end in covered:
        if start > cursor:
            gaps.append((cursor, min(start, until)))
        cursor = max(cursor, end)
        if cursor >= until:
            break
    else:
        if cursor < until:
            gaps.append((cursor, None))
    return [
        Interval(max(since, begin - lead) if begin > since else begin, end, Cause.SCHEDULER_DOWN)
        for begin, end in gaps
        if end is None or end > begin
    ]
