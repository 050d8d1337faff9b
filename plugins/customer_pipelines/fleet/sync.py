"""The fleet's side of a sync round (driven by syncer.py): the snapshot's customers and configs ->
Airflow's pools and paused flags, and each config's next tick. Pools and paused flags are diffed
against what Airflow has and only changes are written, in one transaction each."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

from customer_pipelines.airflow_db import metadata_session
from customer_pipelines.fleet.timetables import CustomerCronTimetable
from customer_pipelines.models import (
    ConfigError,
    Customer,
    PipelineConfig,
    customer_hold_reason,
    is_runnable,
    pool_name_for,
)
from customer_pipelines.settings import Settings
from customer_pipelines.snapshot import (
    Snapshot,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PoolSpec:
    slots: int
    description: str


@dataclass
class PoolSyncResult:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    unchanged: int = 0


def desired_pools(customers: Mapping[str, Customer], prefix: str) -> dict[str, PoolSpec]:
    """One pool per customer; slots = the plan's max concurrent runs. A suspended or churned
    customer, or one without a subscription in force, keeps its pool with 0 slots: nothing of theirs
    starts, queued work waits rather than fails, and the pool's history stays visible."""
    pools = {}
    for customer in customers.values():
        held = customer_hold_reason(customer)
        slots = (customer.max_concurrent_runs or 0) if held is None else 0
        plan = customer.plan.value if customer.plan else "no subscription"
        pools[pool_name_for(customer.customer_id, prefix)] = PoolSpec(
            slots=slots,
            description=f"{customer.company_name or customer.customer_id} ({plan}, {customer.status.value})",
        )
    return pools


def sync_pools(desired: Mapping[str, PoolSpec], prefix: str, settings: Settings | None = None) -> PoolSyncResult:
    """Make Airflow's pools named ``<prefix>*`` equal ``desired``; writes only the differences."""
    from airflow.models.pool import Pool
    from sqlalchemy import select

    result = PoolSyncResult()
    with metadata_session(settings) as session:
        existing = {p.pool: p for p in session.scalars(select(Pool).where(Pool.pool.startswith(prefix)))}
        for name, spec in desired.items():
            pool = existing.pop(name, None)
            if pool is None:
                session.add(Pool(pool=name, slots=spec.slots, description=spec.description, include_deferred=False))
                result.created.append(name)
            elif pool.slots != spec.slots or pool.description != spec.description:
                pool.slots, pool.description = spec.slots, spec.description
                result.updated.append(name)
            else:
                result.unchanged += 1
        for name, pool in existing.items():
            session.delete(pool)
            result.deleted.append(name)
    return result


@dataclass(frozen=True)
class Fleet:
    """A snapshot's customers and valid configs, read and parsed once for all a sync round derives
    from them (pools, paused flags, next ticks): at 50,000 configs parsing is the round's main cost."""

    customers: dict[str, Customer]
    configs: list[PipelineConfig]

    @classmethod
    def of(cls, snapshot: Snapshot) -> Fleet:
        parsed = (row.parse() for row in snapshot.configs())
        return cls(snapshot.customers(), [c for c in parsed if not isinstance(c, ConfigError)])

    def is_runnable(self, config: PipelineConfig) -> bool:
        """An active config of an active customer with a subscription in force (models.hold_reason)."""
        return is_runnable(config, self.customers.get(config.customer_id))


def runnable_dags(fleet: Fleet) -> dict[str, bool]:
    """dag_id -> whether it should be running."""
    return {config.dag_id: fleet.is_runnable(config) for config in fleet.configs}


def runnable_dags_of(snapshot: Snapshot, dag_ids: Iterable[str]) -> dict[str, bool]:
    """runnable_dags for these DAGs alone, each read from the snapshot's index with its customer; a
    DAG whose config is gone, or invalid, is left out (it has no DAG to pause)."""
    runnable: dict[str, bool] = {}
    for dag_id in dag_ids:
        row = snapshot.config_by_dag_id(dag_id)
        config = row.parse() if row else None
        if isinstance(config, PipelineConfig):
            runnable[dag_id] = is_runnable(config, snapshot.customer(config.customer_id))
    return runnable


@dataclass
class PauseSyncResult:
    paused: list[str] = field(default_factory=list)
    unpaused: list[str] = field(default_factory=list)


class PauseLedger(Protocol):
    """Which DAGs the syncer itself paused (quota.SyncerPauses on PostgreSQL)."""

    def held(self, only: set[str] | None = None) -> set[str]: ...

    def record(self, *, paused: set[str], released: set[str]) -> None: ...


@dataclass(frozen=True)
class PausePlan:
    """What one round changes: DAGs to pause, DAGs to unpause, and the ledger's entries to add and
    to drop."""

    pause: set[str]
    unpause: set[str]
    record: set[str]
    release: set[str]


def plan_pauses(
    runnable: Mapping[str, bool],
    airflow_paused: Mapping[str, bool],
    held: set[str],
    in_flight: set[str] | frozenset[str] = frozenset(),
) -> PausePlan:
    """The round's changes from the desired state (``runnable``), Airflow's paused flags and the
    ledger (``held``: the DAGs the syncer paused), from scratch:

    - a DAG that must not run is paused and recorded as the syncer's; so is one Airflow has not
      created yet, since the factory creates it paused on the syncer's behalf (a config enabled,
      or a subscription starting, before the next round must not find it paused "by a person");
    - a DAG that may run again is unpaused if the ledger has it;
    - a DAG that may run but is paused without the ledger's record was paused by a person: kept;
    - the ledger drops DAGs whose config is gone and DAGs that run unpaused;
    - a DAG that must not run but has a task running (``in_flight``) is not paused yet, only
      recorded: Airflow's pause would freeze that run (no retry, no end of its DagRun); its
      timetable already creates no new run (a held config has no next tick), and a later round
      pauses it once nothing of it runs."""
    known = {d: run for d, run in runnable.items() if d in airflow_paused}
    pause = {d for d, run in known.items() if not run and not airflow_paused[d] and d not in in_flight}
    deferred = {d for d, run in known.items() if not run and not airflow_paused[d] and d in in_flight}
    adopt = {d for d, run in known.items() if not run and airflow_paused[d] and d not in held}
    not_created = {d for d, run in runnable.items() if not run and d not in airflow_paused and d not in held}
    unpause = {d for d, run in known.items() if run and airflow_paused[d] and d in held}
    stale = {d for d in held if d not in runnable or (known.get(d) and not airflow_paused[d])}
    return PausePlan(
        pause=pause, unpause=unpause, record=pause | adopt | not_created | deferred, release=unpause | stale
    )


def sync_paused(
    runnable: Mapping[str, bool],
    ledger: PauseLedger,
    settings: Settings | None = None,
    *,
    only: set[str] | None = None,
) -> PauseSyncResult:
    """Converge Airflow's paused flags on the desired state, from scratch every round (so a round
    that failed half-way, a snapshot refreshed by hand or a restarted syncer changes nothing):

    - a DAG that must not run is paused, and the ledger records that the syncer paused it (also
      when Airflow created it paused, or a person paused it before it became unrunnable);
    - a DAG that may run again is unpaused if the ledger says the syncer paused it;
    - a DAG that may run but is paused without the syncer's record was paused by a person in the
      UI, and stays paused.

    The ledger is written before a pause and after an unpause, so a crash in between leaves a state
    the next round finishes. See plan_pauses for the rules. ``only``: these DAGs alone (the API's
    write of one config), with ``runnable`` holding at least them."""
    from airflow.models.dag import DagModel
    from sqlalchemy import select, update

    result = PauseSyncResult()
    query = select(DagModel.dag_id, DagModel.is_paused)
    if only is not None:
        runnable = {d: run for d, run in runnable.items() if d in only}
        held = ledger.held(only)
        query = query.where(DagModel.dag_id.in_(only))
    else:
        held = ledger.held()
    with metadata_session(settings) as session:
        airflow_paused = dict(session.execute(query).tuples().all())
        to_stop = {d for d, run in runnable.items() if not run and airflow_paused.get(d) is False}
        in_flight = _running_dags(session, to_stop)
    plan = plan_pauses(runnable, airflow_paused, held, in_flight)

    ledger.record(paused=plan.record, released=set())
    if plan.pause or plan.unpause:
        with metadata_session(settings) as session:
            for dag_ids, paused in ((plan.pause, True), (plan.unpause, False)):
                if dag_ids:
                    session.execute(update(DagModel).where(DagModel.dag_id.in_(dag_ids)).values(is_paused=paused))
    ledger.record(paused=set(), released=plan.release)
    result.paused, result.unpaused = sorted(plan.pause), sorted(plan.unpause)
    return result


def _running_dags(session: Any, dag_ids: set[str]) -> set[str]:
    """Those of ``dag_ids`` with a task instance running (or deferred) now."""
    if not dag_ids:
        return set()
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    states = (TaskInstanceState.RUNNING, TaskInstanceState.DEFERRED)
    query = select(TaskInstance.dag_id).where(TaskInstance.dag_id.in_(dag_ids), TaskInstance.state.in_(states))
    return set(session.scalars(query.distinct()))


@lru_cache(maxsize=4096)
def schedule_of(cron: str, timezone: str) -> CustomerCronTimetable:
    """A schedule's timetable, built once: a fleet shares few (cron, timezone) pairs, and building
    one describes the cron in words, which costs more than computing its ticks."""
    return CustomerCronTimetable(cron, timezone=timezone)


def next_runs(fleet: Fleet, now: datetime) -> list[dict[str, Any]]:
    """The next tick of every runnable config, computed by the DAG's own timetable (Airflow's cron
    arithmetic in the config's timezone), so the figure is the tick the scheduler will run; and
    when its run starts (the tick plus the config's start offset)."""
    rows = []
    for config in fleet.configs:
        if not fleet.is_runnable(config):
            continue
        tick = schedule_of(config.schedule_cron, config.timezone).next_tick(now)
        rows.append(
            {
                "config_id": config.config_id,
                "customer_id": config.customer_id,
                "next_run_time": datetime.fromtimestamp(tick.timestamp(), UTC),
                "next_start_time": datetime.fromtimestamp(tick.timestamp(), UTC) + config.start_offset,
                "computed_at": now,
            }
        )
    return rows


def _write_next_runs(store: Any, fleet: Fleet) -> None:
    try:
        store.load_rows("config_next_runs", next_runs(fleet, datetime.now(UTC)), replace=True)
    except Exception:
        log.exception("next_run_time refresh failed; retrying next round")
