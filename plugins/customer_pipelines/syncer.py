"""The syncer service: one round every CP_SYNC_INTERVAL_SECONDS, BigQuery -> snapshot -> Airflow's
pools and paused flags (fleet/sync.py), then the runs' housekeeping (the failure policy, the tick
check, the mirror's spool, reconcile). It runs as its own process (``python -m customer_pipelines
sync [--loop]``), not as a task: Airflow 3 task code has no metadata-database access, while this
process, like Airflow's own CLI, has it. It sits above both the fleet and the runs, and is the one
module that drives them both."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from customer_pipelines.fleet.sync import (
    Fleet,
    PauseSyncResult,
    PoolSyncResult,
    _write_next_runs,
    desired_pools,
    runnable_dags,
    runnable_dags_of,
    sync_paused,
    sync_pools,
)
from customer_pipelines.models import ConfigError
from customer_pipelines.private_files import ensure_state_dir, write_private
from customer_pipelines.settings import Settings, get_settings
from customer_pipelines.snapshot import (
    RefreshGuard,
    RefreshRefused,
    RefreshResult,
    Snapshot,
    refresh_lock,
    refresh_snapshot,
)

if TYPE_CHECKING:
    from customer_pipelines.runs.fleet_alerts import AlertRound
    from customer_pipelines.runs.tick_watch import TickCheck, TickWatch

log = logging.getLogger(__name__)


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
    refresh_refused: str | None = None
    """Why the round kept the last good snapshot (the refresh guard), if it did."""
    ticks_missed: int = 0
    """Ticks newly found missed with no cause (alerted TICK_MISSED)."""
    ticks_late: int = 0
    """Configs newly late (alerted LATE_START)."""
    files_parsed: int = 0
    """DAG files the round asked the DAG processor to parse (the shards whose configs changed)."""
    alerts_raised: list[str] = field(default_factory=list)
    """Fleet alerts this round raised (their keys; runs/fleet_alerts.py)."""
    alerts_cleared: list[str] = field(default_factory=list)
    alerts_open: int = 0

    def summary(self) -> str:
        return (
            f"snapshot: {self.configs} configs, {self.customers} customers, {len(self.invalid)} invalid; "
            f"pools: +{len(self.pools.created)} ~{len(self.pools.updated)} -{len(self.pools.deleted)} "
            f"={self.pools.unchanged}; paused {len(self.pauses.paused)}, unpaused {len(self.pauses.unpaused)}; "
            f"mirror: {self.spool_delivered} spooled delivered, {self.reconciled} reconciled, "
            f"backlog {self.mirror_backlog}, rejected {self.mirror_rejected}; "
            f"ticks: {self.ticks_missed} missed unexplained, {self.ticks_late} late; "
            f"parse asked for {self.files_parsed} file(s); "
            f"fleet alerts: {self.alerts_open} open, raised {sorted(self.alerts_raised)}, "
            f"cleared {sorted(self.alerts_cleared)}; "
            f"auto-paused {len(self.auto_paused)} ({self.seconds:.2f}s)"
            + (
                f"; REFRESH REFUSED, serving the last good snapshot: {self.refresh_refused}"
                if self.refresh_refused
                else ""
            )
        )


def _sync_paused(runnable: Mapping[str, bool], settings: Settings, only: set[str] | None = None) -> PauseSyncResult:
    """sync_paused on the ledger of the syncer's own pauses; with the ledger down (or none set) the
    paused flags wait for the next round: unpausing without the ledger could undo a person's pause."""
    from customer_pipelines.runs.quota import QuotaLedgerError, SyncerPauses

    try:
        return sync_paused(runnable, SyncerPauses(settings), settings, only=only)
    except (QuotaLedgerError, RuntimeError):
        log.exception("paused flags not synced (the quota ledger records the syncer's pauses); next round")
        return PauseSyncResult()


def converge_paused(settings: Settings, only: frozenset[str] | None = None) -> PauseSyncResult:
    """The paused flags of the last good snapshot's fleet, as a sync round sets them; ``only``: of
    these DAGs alone (those a refresh changed; None: every DAG). A snapshot refreshed by hand calls
    it too: the DAG processor creates a held config's DAG paused from the new snapshot, and only the
    ledger's record tells the next round that pause was the syncer's, not a person's (a config
    enabled before that round would otherwise stay paused)."""
    if only is not None and not only:
        return PauseSyncResult()
    with Snapshot.open_last_good(settings.snapshot_file) as snapshot:
        if only is None:
            return _sync_paused(runnable_dags(Fleet.of(snapshot)), settings)
        # A DAG whose config is gone is left out of runnable but not of only: the ledger drops it.
        runnable = runnable_dags_of(snapshot, only)
    return _sync_paused(runnable, settings, only=set(only))


def _ensure_quota_schema(settings: Settings) -> None:
    """The ledger's tables, if a ledger is configured. Bounded (CP_QUOTA_DB_*_TIMEOUT_SECONDS); a
    ledger that is down fails only this step and the paused flags: snapshot and pools do not need it."""
    if not settings.quota_db_url:
        return
    from customer_pipelines.runs.quota import QuotaLedger, QuotaLedgerError

    try:
        QuotaLedger(settings).ensure_schema()
    except QuotaLedgerError:
        log.exception("quota ledger schema not checked; retrying next round")


def _apply_failure_policy(store: Any, settings: Settings) -> list[str]:
    from customer_pipelines.runs.failure_policy import apply_failure_policy

    try:
        return apply_failure_policy(store, settings).paused
    except Exception:
        log.exception("failure policy failed; retrying next round")
        return []


def _mirror_housekeeping(store: Any, settings: Settings) -> tuple[int, int, int, int]:
    """Deliver this host's spooled transitions, then fill gaps from Airflow's records (last 2 h);
    returns (delivered, reconciled, backlog still spooled, rejected rows set aside)."""
    from customer_pipelines.runs.mirror import RunStateMirror
    from customer_pipelines.runs.reconcile import reconcile
    from customer_pipelines.runs.sla import sla_spool

    delivered = reconciled = 0
    mirror = RunStateMirror(store, settings.spool_dir)
    try:
        for spool in (mirror, sla_spool(settings, store)):
            while batch := spool.drain():
                delivered += batch
        reconciled = len(reconcile(store, since=datetime.now(UTC) - timedelta(hours=2)).written)
    except Exception:
        log.exception("mirror housekeeping failed; retrying next round")
    _alert_rejected(mirror, settings)
    return delivered, reconciled, mirror.backlog(), mirror.rejected()


def _alert_rejected(mirror: Any, settings: Settings) -> None:
    """One alert per batch of rows newly set aside (BigQuery refused them for their content)."""
    from customer_pipelines.runs.failure_policy import Alert, notifier_from_settings

    new = mirror.unalerted_rejected()
    if new:
        message = (
            f"run-state mirror: BigQuery refused {len(new)} transition(s) for their content, kept under "
            f"{mirror.spool_dir / 'rejected'} (e.g. {new[0]}); fix the cause, then "
            "`python -m customer_pipelines mirror replay-rejected`"
        )
        notifier_from_settings(settings)(Alert("MIRROR_REJECTED", "", "", 0, message))


def _check_ticks(watch: TickWatch, fleet: Fleet, anchors: dict[str, datetime], settings: Settings) -> TickCheck:
    """The runnable configs' recent ticks (runs/tick_watch.py); Airflow's database down fails only
    this step, and the next round checks from the same watermark."""
    from customer_pipelines.airflow_db import metadata_session
    from customer_pipelines.runs.tick_watch import TickCheck

    runnable = [config for config in fleet.configs if fleet.is_runnable(config)]
    try:
        with metadata_session(settings) as session:
            return watch.check(runnable, anchors, session=session, now=datetime.now(UTC))
    except Exception:
        log.exception("tick check failed; retrying next round")
        return TickCheck()


PENDING_PARSES_FILE = "reparse-pending.json"
"""In the state directory: the files whose parse request could not be sent, sent with the next round's."""


def request_parses(refreshed: RefreshResult | None, settings: Settings) -> int:
    """Ask the DAG processor to parse the shard files whose configs this refresh changed (none when
    nothing changed, every one when the refresh cannot tell), plus any an earlier round could not
    ask for; returns how many files. A request that fails (Airflow's database down) is kept in
    ``<state_dir>/reparse-pending.json`` and sent again next round, so a change is never left to the
    DAG processor's daily timer."""
    from customer_pipelines.fleet.parsing import request_files
    from customer_pipelines.fleet.shards import files_to_reparse
    from customer_pipelines.snapshot_store import publish_newest

    pending_path = settings.state_dir / PENDING_PARSES_FILE
    pending = _pending_parses(pending_path, settings.fleet_shards)
    files = set(pending)
    changed = refreshed.changed_dag_ids if refreshed is not None else frozenset()
    if changed is None or changed:
        files.update(files_to_reparse(changed, settings.fleet_shards))
    try:
        # With a snapshot store, the generation goes there first: the parses read it from there.
        publish_newest(settings)
        if files:
            request_files(settings, sorted(files))
    except Exception:
        log.exception("re-parse of %d file(s) not requested; asking again next round", len(files))
        if files:
            defer_parses(settings, files)
        return 0
    if not files:
        return 0
    if pending:
        pending_path.unlink(missing_ok=True)
    return len(files)


def defer_parses(settings: Settings, files: Iterable[str]) -> None:
    """Keep these files for the next round's parse requests (with those kept already). Callers
    hold the snapshot's refresh lock, as the round that reads them does."""
    path = settings.state_dir / PENDING_PARSES_FILE
    kept = set(_pending_parses(path, settings.fleet_shards)) | set(files)
    write_private(ensure_state_dir(settings.state_dir) / PENDING_PARSES_FILE, json.dumps(sorted(kept)))


def _pending_parses(path: Path, shards: int) -> list[str]:
    """The files an earlier round could not ask for; every file when the record is unreadable."""
    from customer_pipelines.fleet.shards import files_to_reparse

    try:
        files = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError):
        files = None
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        log.error("unreadable %s: asking for every shard file", path)
        return files_to_reparse(None, shards)
    return files


def _refresh(store: Any, settings: Settings) -> tuple[RefreshResult | None, str | None]:
    """Refresh the snapshot; a refresh the guard refuses is logged and alerted, and the round goes
    on with the last good snapshot."""
    from customer_pipelines.runs.failure_policy import Alert, notifier_from_settings

    guard = RefreshGuard.of(settings)
    try:
        full_every = timedelta(minutes=settings.full_refresh_minutes)
        return refresh_snapshot(store, settings.snapshot_file, guard=guard, full_every=full_every), None
    except RefreshRefused as exc:
        log.error("%s", exc)
        notifier_from_settings(settings)(Alert("REFRESH_REFUSED", "", "", 0, str(exc)))
        return None, str(exc)


def _fleet_alerts(fleet: Fleet, settings: Settings) -> AlertRound:
    """The fleet alerts of this round (runs/fleet_alerts.py); a source that cannot be read (Airflow's
    database, the ledger) fails only this step: the open episodes stay as they are until next round."""
    from customer_pipelines.runs.fleet_alerts import AlertRound, evaluate, gather_facts

    now = datetime.now(UTC)
    try:
        limits = {customer_id: customer.daily_run_limit for customer_id, customer in fleet.customers.items()}
        return evaluate(settings, gather_facts(settings, limits, now), now=now)
    except Exception:
        log.exception("fleet alerts not evaluated this round")
        return AlertRound()


def _adopt_newer_generation(settings: Settings) -> None:
    """With a snapshot store, a newer generation there than here (this state directory is new, or
    restored from an older backup) becomes this host's before the refresh: generations go on from
    the store's, never restart below it. The store unreadable: the round goes on from this copy."""
    from customer_pipelines.snapshot_store import fetch_newest

    if settings.snapshot_store_url:
        try:
            fetch_newest(settings, locked=True)
        except Exception:
            log.exception(
                "snapshot store %s unreadable; this round goes on from this host's copy", settings.snapshot_store_url
            )


def run_sync(settings: Settings | None = None, store: Any = None, watch: TickWatch | None = None) -> SyncReport:
    """One sync: refresh the snapshot from BigQuery, then pools and paused flags from it, then the
    housekeeping. One round at a time per snapshot (``refresh_lock``): two syncers never interleave.
    ``watch`` carries the tick check across rounds (``sync_forever``'s); without one the round checks
    the whole ``tick_check_hours``."""
    from customer_pipelines.bigquery.store import BigQueryStore
    from customer_pipelines.runs.tick_watch import TickWatch

    settings = settings or get_settings()
    watch = watch or TickWatch(settings)
    began = time.monotonic()
    store = store or BigQueryStore(settings)
    with refresh_lock(settings.snapshot_file):
        _adopt_newer_generation(settings)
        _ensure_quota_schema(settings)  # the ledger also records which DAGs the syncer paused
        auto_paused = _apply_failure_policy(store, settings)  # before the refresh: pauses take effect now
        refreshed, refused = _refresh(store, settings)
        with Snapshot.open_last_good(settings.snapshot_file) as snapshot:
            fleet = Fleet.of(snapshot)
            anchors = {dag_id: since for dag_id, (since, _) in snapshot.anchors().items()}
        pools = sync_pools(desired_pools(fleet.customers, settings.pool_prefix), settings.pool_prefix, settings)
        pauses = _sync_paused(runnable_dags(fleet), settings)
        # After the paused flags: a parse writes the shard's DAG rows while it runs (api/service.py).
        files_parsed = request_parses(refreshed, settings)
        ticks = _check_ticks(watch, fleet, anchors, settings)
        _write_next_runs(store, fleet)
        delivered, reconciled, backlog, rejected = _mirror_housekeeping(store, settings)
        alerts = _fleet_alerts(fleet, settings)
    return SyncReport(
        refreshed.configs if refreshed else len(fleet.configs),
        refreshed.customers if refreshed else len(fleet.customers),
        refreshed.invalid if refreshed else [],
        pools,
        pauses,
        time.monotonic() - began,
        delivered,
        reconciled,
        auto_paused,
        backlog,
        rejected,
        refresh_refused=refused,
        ticks_missed=len(ticks.missed),
        ticks_late=len(ticks.late),
        files_parsed=files_parsed,
        alerts_raised=[c.key for c in alerts.raised],
        alerts_cleared=[str(e["key"]) for e in alerts.cleared],
        alerts_open=len(alerts.open),
    )


def sync_forever(settings: Settings | None = None) -> None:
    """The syncer service: one sync every ``sync_interval_seconds``; a failed sync (BigQuery down)
    is logged and retried at the next interval while the last good snapshot keeps serving."""
    from customer_pipelines.runs.tick_watch import TickWatch

    settings = settings or get_settings()
    watch = TickWatch(settings)  # across rounds: each checks only the ticks since the last
    while True:
        try:
            log.info("sync: %s", run_sync(settings, watch=watch).summary())
        except Exception:
            log.exception("sync failed; serving the last good snapshot")
        time.sleep(settings.sync_interval_seconds)
