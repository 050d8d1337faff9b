"""The fleet sync: BigQuery -> snapshot -> Airflow's pools and paused flags.

It runs as its own process (``python -m customer_pipelines sync [--loop]``, a service beside the
scheduler), not as a task: Airflow 3 task code has no metadata-database access, while this process,
like Airflow's own CLI, has it. Pools and paused flags are diffed against what Airflow has and only
changes are written, in one transaction each."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from customer_pipelines.models import (
    ConfigError,
    Customer,
    CustomerStatus,
    PipelineConfig,
    parse_config,
    pool_name_for,
)
from customer_pipelines.settings import Settings, get_settings
from customer_pipelines.snapshot import Snapshot, SnapshotError, refresh_snapshot

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
    customer keeps its pool with 0 slots: nothing of theirs starts, queued work waits rather than
    fails, and the pool's history stays visible."""
    pools = {}
    for customer in customers.values():
        active = customer.status is CustomerStatus.ACTIVE
        slots = customer.max_concurrent_runs if active else 0
        plan = customer.plan.value if customer.plan else "no plan"
        pools[pool_name_for(customer.customer_id, prefix)] = PoolSpec(
            slots=slots,
            description=f"{customer.company_name or customer.customer_id} ({plan}, {customer.status.value})",
        )
    return pools


def sync_pools(desired: Mapping[str, PoolSpec], prefix: str) -> PoolSyncResult:
    """Make Airflow's pools named ``<prefix>*`` equal ``desired``; writes only the differences."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session
    from sqlalchemy import select

    result = PoolSyncResult()
    with create_session() as session:
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
        parsed = (parse_config(row.row) for row in snapshot.configs())
        return cls(snapshot.customers(), [c for c in parsed if not isinstance(c, ConfigError)])

    def is_runnable(self, config: PipelineConfig) -> bool:
        """An active config of an active customer."""
        customer = self.customers.get(config.customer_id)
        return bool(config.is_active and customer is not None and customer.is_active)


def runnable_dags(fleet: Fleet) -> dict[str, bool]:
    """dag_id -> whether it should be running."""
    return {config.dag_id: fleet.is_runnable(config) for config in fleet.configs}


@dataclass
class PauseSyncResult:
    paused: list[str] = field(default_factory=list)
    unpaused: list[str] = field(default_factory=list)


def sync_paused(now: Mapping[str, bool], before: Mapping[str, bool]) -> PauseSyncResult:
    """Pause every DAG that must not run; unpause a DAG only when its config or customer turned
    runnable since the previous snapshot, so an operator's manual pause in the UI is respected."""
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    result = PauseSyncResult()
    must_pause = {d for d, run in now.items() if not run}
    may_unpause = {d for d, run in now.items() if run and before.get(d) is False}
    if not must_pause and not may_unpause:
        return result
    with create_session() as session:
        for dag in session.scalars(select(DagModel).where(DagModel.dag_id.in_(must_pause | may_unpause))):
            if dag.dag_id in must_pause and not dag.is_paused:
                dag.is_paused = True
                result.paused.append(dag.dag_id)
            elif dag.dag_id in may_unpause and dag.is_paused:
                dag.is_paused = False
                result.unpaused.append(dag.dag_id)
    return result


@dataclass
class SyncReport:
    configs: int
    customers: int
    invalid: list[ConfigError]
    pools: PoolSyncResult
    pauses: PauseSyncResult
    seconds: float
    spool_delivered: int = 0
    reconciled: int = 0
    auto_paused: list[str] = field(default_factory=list)
    mirror_backlog: int = 0
    """Transitions still spooled on this host after the round (the mirror's backlog metric)."""
    mirror_rejected: int = 0
    """Transitions BigQuery refused for their content, set aside under ``<spool>/rejected``."""

    def summary(self) -> str:
        return (
            f"snapshot: {self.configs} configs, {self.customers} customers, {len(self.invalid)} invalid; "
            f"pools: +{len(self.pools.created)} ~{len(self.pools.updated)} -{len(self.pools.deleted)} "
            f"={self.pools.unchanged}; paused {len(self.pauses.paused)}, unpaused {len(self.pauses.unpaused)}; "
            f"mirror: {self.spool_delivered} spooled delivered, {self.reconciled} reconciled, "
            f"backlog {self.mirror_backlog}, rejected {self.mirror_rejected}; "
            f"auto-paused {len(self.auto_paused)} ({self.seconds:.2f}s)"
        )


def _runnable_or_empty(snapshot_path: Any) -> dict[str, bool]:
    try:
        with Snapshot.open_last_good(snapshot_path) as snapshot:
            return runnable_dags(Fleet.of(snapshot))
    except SnapshotError:
        return {}


def next_runs(fleet: Fleet, now: datetime) -> list[dict[str, Any]]:
    """The next tick of every runnable config (croniter in the config's timezone, DST-correct)."""
    from zoneinfo import ZoneInfo

    from croniter import croniter

    rows = []
    for config in fleet.configs:
        if not fleet.is_runnable(config):
            continue
        tick = croniter(config.schedule_cron, now.astimezone(ZoneInfo(config.timezone))).get_next(datetime)
        rows.append(
            {
                "config_id": config.config_id,
                "customer_id": config.customer_id,
                "next_run_time": tick.astimezone(UTC),
                "computed_at": now,
            }
        )
    return rows


def _write_next_runs(store: Any, fleet: Fleet) -> None:
    try:
        store.load_rows("config_next_runs", next_runs(fleet, datetime.now(UTC)), replace=True)
    except Exception:
        log.exception("next_run_time refresh failed; retrying next round")


def _ensure_quota_schema(settings: Settings) -> None:
    """The ledger's table, if a ledger is configured. Bounded (CP_QUOTA_DB_*_TIMEOUT_SECONDS); a
    ledger that is down fails only this step: snapshot, pools and pauses do not need it."""
    if not settings.quota_db_url:
        return
    from customer_pipelines.quota import QuotaLedger, QuotaLedgerError

    try:
        QuotaLedger(settings).ensure_schema()
    except QuotaLedgerError:
        log.exception("quota ledger schema not checked; retrying next round")


def _apply_failure_policy(store: Any, settings: Settings) -> list[str]:
    from customer_pipelines.failure_policy import apply_failure_policy

    try:
        return apply_failure_policy(store, settings).paused
    except Exception:
        log.exception("failure policy failed; retrying next round")
        return []


def _mirror_housekeeping(store: Any, settings: Settings) -> tuple[int, int, int, int]:
    """Deliver this host's spooled transitions, then fill gaps from Airflow's records (last 2 h);
    returns (delivered, reconciled, backlog still spooled, rejected rows set aside)."""
    from datetime import timedelta

    from customer_pipelines.mirror import RunStateMirror
    from customer_pipelines.reconcile import reconcile

    delivered = reconciled = 0
    mirror = RunStateMirror(store, settings.spool_dir)
    try:
        while batch := mirror.drain():
            delivered += batch
        reconciled = len(reconcile(store, since=datetime.now(UTC) - timedelta(hours=2)).written)
    except Exception:
        log.exception("mirror housekeeping failed; retrying next round")
    return delivered, reconciled, mirror.backlog(), mirror.rejected()


def run_sync(settings: Settings | None = None, store: Any = None) -> SyncReport:
    """One sync: refresh the snapshot from BigQuery, then pools and paused flags from it."""
    from customer_pipelines.store import BigQueryStore

    settings = settings or get_settings()
    began = time.monotonic()
    store = store or BigQueryStore(settings)
    _ensure_quota_schema(settings)
    before = _runnable_or_empty(settings.snapshot_file)
    auto_paused = _apply_failure_policy(store, settings)  # before the refresh: pauses take effect now
    refreshed = refresh_snapshot(store, settings.snapshot_file)
    with Snapshot.open_last_good(settings.snapshot_file) as snapshot:
        fleet = Fleet.of(snapshot)
    pools = sync_pools(desired_pools(fleet.customers, settings.pool_prefix), settings.pool_prefix)
    pauses = sync_paused(runnable_dags(fleet), before)
    _write_next_runs(store, fleet)
    delivered, reconciled, backlog, rejected = _mirror_housekeeping(store, settings)
    return SyncReport(
        refreshed.configs,
        refreshed.customers,
        refreshed.invalid,
        pools,
        pauses,
        time.monotonic() - began,
        delivered,
        reconciled,
        auto_paused,
        backlog,
        rejected,
    )


def sync_forever(settings: Settings | None = None) -> None:
    """The syncer service: one sync every ``sync_interval_seconds``; a failed sync (BigQuery down)
    is logged and retried at the next interval while the last good snapshot keeps serving."""
    settings = settings or get_settings()
    while True:
        try:
            log.info("sync: %s", run_sync(settings).summary())
        except Exception:
            log.exception("sync failed; serving the last good snapshot")
        time.sleep(settings.sync_interval_seconds)
