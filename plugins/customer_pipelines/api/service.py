"""The API's work, over the same parts the rest of the platform uses.

Reads come from what the platform already holds: the config snapshot (which the API's own writes
keep fresh), the key ring in memory, PostgreSQL and Airflow's metadata: listing or getting configs
costs no BigQuery query. Only runs (the mirror) are read from BigQuery.

A write of a config, under that config's write lock (api/ledger.py, shared by every API worker and
server), in this order:
1. the new version: the current one (snapshot, or a higher version the API claimed) plus the change,
   validated whole (models.PipelineConfig) -> 422 naming the field; ``version`` given and not current -> 409;
2. its version number claimed in PostgreSQL (two writers never append the same version);
3. appended to BigQuery by streaming insert (``customer_pipeline_configs`` is an append-only version
   log read through ``customer_pipeline_configs_current``: no UPDATE ever touches a row, so BigQuery's
   streaming-buffer and DML-concurrency limits never apply); the insertId makes a retried request
   write it once. If this fails, the claim is given back and nothing was written (503);
4. one audit row (who, what, old and new values);
5. the snapshot patched and swapped in, the DAG paused or unpaused by the syncer's rules, and a
   re-parse of the fleet file requested. If a step of 5 fails, BigQuery already holds the change:
   the answer says ``applied_in_airflow: false`` and the next sync round (CP_SYNC_INTERVAL_SECONDS)
   converges Airflow on it, as it does for edits made in BigQuery directly."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from customer_pipelines.api.airflow_control import AirflowControl
from customer_pipelines.api.auth import Caller, RateLimiter, VerifiedTokens
from customer_pipelines.api.errors import ApiError, field_errors, invalid, invalid_fields
from customer_pipelines.api.keys import KeyRing, new_key
from customer_pipelines.api.ledger import ApiLedger
from customer_pipelines.api.overview import FleetOverview
from customer_pipelines.api.recovery import Recovery
from customer_pipelines.bigquery.store import BigQueryStore, RejectedRows, StoreError
from customer_pipelines.fleet.sync import desired_pools, schedule_of
from customer_pipelines.models import (
    PLAN_LIMITS,
    Customer,
    PipelineConfig,
    customer_hold_reason,
    dag_id_for,
    hold_reason,
    parse_config,
    pool_name_for,
    start_offset,
)
from customer_pipelines.settings import Settings
from customer_pipelines.snapshot import (
    ConfigRow,
    Snapshot,
    SnapshotError,
    config_id_key,
    patch_snapshot,
    refresh_lock,
)
from customer_pipelines.snapshot_store import publish_newest

log = logging.getLogger(__name__)
T = TypeVar("T")

CONFIG_COLUMNS = (
    "config_id",
    "customer_id",
    "display_name",
    "provider",
    "domain",
    "pipeline_template",
    "is_active",
    "schedule_cron",
    "timezone",
    "priority",
    "parameters",
    "retry_config",
    "max_execution_duration_minutes",
    "sla_breach_threshold_minutes",
    "auto_backfill_ticks",
    "start_window_minutes",
    "version",
    "deleted_at",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
)
JSON_COLUMNS = ("parameters", "retry_config")


def _now() -> datetime:
    return datetime.now(UTC)


def _future_or_none(moment: datetime | None, field: str = "expires_at") -> datetime | None:
    """A key's expiry: in UTC (a time without a zone is taken as UTC), and in the future."""
    if moment is None:
        return None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment <= _now():
        raise invalid(field, "must be in the future")
    return moment.astimezone(UTC)


Generation = tuple[int, int, int]


class SnapshotReader:
    """The current snapshot, opened once per generation and thread (SQLite connections are per
    thread): a request costs a stat() and an indexed read. A generation's whole-file check runs
    once, not in every thread (3-4 ms at 5,000 configs; a burst of writes makes a new generation
    every few requests, and each of the server's threads opens each one it reads)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._checked: Generation | None = None
        """The generation whose file passed Snapshot's whole-file check last."""
        self._opening = threading.Lock()

    def generation(self) -> Generation | None:
        """Which file is the snapshot now: every write swaps in a new file (a new inode), so this
        changes with every generation, whichever process or API worker wrote it. None: no file."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_ino, stat.st_mtime_ns, stat.st_size)

    def get(self) -> Snapshot:
        generation = self.generation()
        held = getattr(self._local, "held", None)
        if held is not None and held[0] == generation and generation is not None:
            return held[1]
        if held is not None:
            held[1].close()
        try:
            snapshot = self._open(generation)
        except SnapshotError as exc:
            raise ApiError(503, f"no config snapshot yet (the syncer writes it): {exc}") from None
        self._local.held = (generation, snapshot)
        return snapshot

    def _open(self, generation: Generation | None) -> Snapshot:
        # One thread checks a new generation while the others wait for it, then trust it. The file
        # opened is the checked one only if the path named it before and after the open.
        with self._opening:
            if generation is not None and generation == self._checked:
                try:
                    snapshot = Snapshot(self.path, checked=True)
                except sqlite3.Error:
                    pass  # replaced or removed meanwhile: opened and checked below
                else:
                    if self.generation() == generation:
                        return snapshot
                    snapshot.close()
            snapshot = Snapshot.open_last_good(self.path)
            if snapshot.path == self.path and generation is not None and self.generation() == generation:
                self._checked = generation
            return snapshot


class ReadCache:
    """The JSON bodies of reads of one snapshot generation, by the read's key (route, customer,
    arguments): a repeated read costs a stat() and a dict lookup, not SQLite, validation and JSON
    encoding. Only answers of the generation a request itself saw are served, and a new generation
    empties the cache, so a read after a write (of this or another API worker: a write swaps in a
    new file) is never answered from before it. At most ``max_entries`` answers are held."""

    def __init__(self, max_entries: int = 20_000) -> None:
        self.max_entries = max_entries
        self._generation: Generation | None = None
        self._bodies: dict[tuple[Any, ...], bytes] = {}
        self._lock = threading.Lock()

    def get(self, generation: Generation | None, key: tuple[Any, ...]) -> bytes | None:
        with self._lock:
            return self._bodies.get(key) if generation is not None and generation == self._generation else None

    def put(self, generation: Generation | None, key: tuple[Any, ...], body: bytes) -> None:
        if generation is None:
            return
        with self._lock:
            if generation != self._generation:
                self._generation, self._bodies = generation, {}
            if len(self._bodies) < self.max_entries:
                self._bodies[key] = body


@dataclass
class _Queued(Generic[T]):
    item: T
    done: bool = False
    error: BaseException | None = None


class GroupCommit(Generic[T]):
    """One writer for many requests: each request queues its item, and whichever request takes the
    writer's turn writes every item queued by then in one call of ``write`` (a group commit), so 32
    concurrent writes cost a few calls, not 32. ``write`` returns the errors of single items (by
    their index in the batch); if it raises, every item of the batch gets that error. Each request
    then raises its own item's error, if any."""

    def __init__(self, write: Callable[[list[T]], dict[int, BaseException]]) -> None:
        self._write = write
        self._queue: list[_Queued[T]] = []
        self._queue_lock = threading.Lock()
        self._writer = threading.Lock()
        self.batches_written = 0

    def submit(self, item: T) -> None:
        mine = _Queued(item)
        with self._queue_lock:
            self._queue.append(mine)
        with self._writer:
            if not mine.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                try:
                    for index, error in self._write([q.item for q in batch]).items():
                        batch[index].error = error
                    self.batches_written += 1
                except BaseException as exc:  # noqa: BLE001 - not swallowed: every request of the batch raises it
                    for queued in batch:
                        queued.error = exc
                finally:
                    for queued in batch:
                        queued.done = True
        if mine.error is not None:
            raise mine.error


class SnapshotPatcher:
    """Writes the API's changes into the snapshot, many requests' changes in one new generation
    (a GroupCommit of snapshot patches)."""

    def __init__(self, path: Path, settings: Settings | None = None) -> None:
        self.path = path
        self.settings = settings
        self._commits: GroupCommit[tuple[list[dict[str, Any]], list[dict[str, Any]]]] = GroupCommit(self._write)

    @property
    def generations_written(self) -> int:
        return self._commits.batches_written

    def patch(self, *, configs: Sequence[dict[str, Any]] = (), customers: Sequence[dict[str, Any]] = ()) -> None:
        self._commits.submit((list(configs), list(customers)))

    def _write(self, batch: list[tuple[list[dict[str, Any]], list[dict[str, Any]]]]) -> dict[int, BaseException]:
        with refresh_lock(self.path, timeout=30):
            patch_snapshot(
                self.path,
                configs=[row for configs, _ in batch for row in configs],
                customers=[row for _, customers in batch for row in customers],
                source="api",
            )
            if self.settings is not None and self.settings.snapshot_store_url:
                self._publish([configs for configs, _ in batch], any(customers for _, customers in batch))
        return {}

    def _publish(self, configs: list[list[dict[str, Any]]], customers_changed: bool) -> None:
        """The new generation to the snapshot store, before the callers ask for parses (they read it
        from there). If the store refuses it, the parses are left to the next sync round (which
        publishes first), and the callers learn their change is not yet applied in Airflow."""
        assert self.settings is not None
        try:
            publish_newest(self.settings)
        except Exception:
            from customer_pipelines.fleet.shards import files_to_reparse
            from customer_pipelines.syncer import defer_parses

            dag_ids = (
                None
                if customers_changed
                else [dag_id_for(str(r["customer_id"]), str(r["config_id"])) for rows in configs for r in rows]
            )
            defer_parses(self.settings, files_to_reparse(dag_ids, self.settings.fleet_shards))
            raise


class BatchedInserts:
    """The API's streaming inserts, funnelled per table (a GroupCommit per table): 32 concurrent
    pauses cost a few requests to BigQuery, not 64, and a row refused for its content fails only
    the request it came from."""

    def __init__(self, store: BigQueryStore) -> None:
        self.store = store
        self._tables: dict[str, GroupCommit[tuple[dict[str, Any], str]]] = {}
        self._lock = threading.Lock()

    def insert(self, table: str, row: dict[str, Any], row_id: str) -> None:
        with self._lock:
            commits = self._tables.setdefault(table, GroupCommit(lambda batch: self._write(table, batch)))
        commits.submit((row, row_id))

    def _write(self, table: str, batch: list[tuple[dict[str, Any], str]]) -> dict[int, BaseException]:
        try:
            self.store.insert_rows(table, [row for row, _ in batch], row_ids=[row_id for _, row_id in batch])
        except RejectedRows as exc:
            return {
                index: StoreError(f"insert into {table}: row refused: {exc.rejected.get(index, ['transient'])[:3]}")
                for index in range(len(batch))
                if index in exc.rejected or index in exc.transient
            }
        return {}


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _decoded(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def config_view(row: dict[str, Any]) -> dict[str, Any]:
    """A config row as the API shows it: JSON columns decoded, its DAG id, and whether it is valid."""
    out = {name: row.get(name) for name in CONFIG_COLUMNS if name != "deleted_at"}
    for name in JSON_COLUMNS:
        out[name] = _decoded(out[name]) or ({} if name == "parameters" else None)
    customer_id, config_id = row.get("customer_id"), row.get("config_id")
    out["dag_id"] = dag_id_for(str(customer_id), str(config_id)) if customer_id and config_id else None
    window = out.get("start_window_minutes")
    out["start_offset_seconds"] = (
        int(start_offset(out["dag_id"], window).total_seconds()) if out["dag_id"] and isinstance(window, int) else 0
    )
    try:
        PipelineConfig.model_validate(row)
        out["valid"], out["invalid_reason"] = True, None
    except ValidationError as exc:
        out["valid"], out["invalid_reason"] = (
            False,
            "; ".join(f"{e['field']}: {e['reason']}" for e in field_errors(exc)),
        )
    return out


@dataclass
class WriteResult:
    config: dict[str, Any]
    applied_in_airflow: bool
    airflow_detail: str = ""
    paused: list[str] = field(default_factory=list)
    unpaused: list[str] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        return {
            **self.config,
            "applied_in_airflow": self.applied_in_airflow,
            "airflow_detail": self.airflow_detail or None,
            "paused": self.paused,
            "unpaused": self.unpaused,
        }


class Services:
    """Everything a request needs, built once per API server process."""

    def __init__(self, settings: Settings, *, store: BigQueryStore | None = None) -> None:
        self.settings = settings
        self.store = store or BigQueryStore(settings)
        self.inserts = BatchedInserts(self.store)
        self.ledger = ApiLedger(settings)
        self.airflow = AirflowControl(settings)
        self.snapshots = SnapshotReader(settings.snapshot_file)
        self.patcher = SnapshotPatcher(settings.snapshot_file, settings)
        self.keys = KeyRing(lambda: self.store.query("queries/api_keys.sql"), settings.api_key_refresh_seconds)
        self.rate_limiter = RateLimiter(settings.api_rate_limit_per_minute)
        self.verified_tokens = VerifiedTokens(settings.api_token_cache_seconds)
        self.read_cache = ReadCache()
        self.recovery = Recovery(self)
        self.overview = FleetOverview(self)

    # -- reads --------------------------------------------------------------------------------

    def cached_answer(self, key: tuple[Any, ...]) -> bytes | None:
        """The JSON body of this read of the current snapshot, if it was answered already; no I/O but a stat()."""
        return self.read_cache.get(self.snapshots.generation(), key)

    def answer(self, key: tuple[Any, ...], read: Callable[[], dict[str, Any]]) -> bytes:
        """The JSON body of ``read()``, kept for the next identical read of the same generation. The
        key must name everything the answer depends on (the customer first of all)."""
        # The generation before the read: the body is of this generation or a newer one, never older.
        generation = self.snapshots.generation()
        body = JSONResponse(read()).body
        self.read_cache.put(generation, key, body)
        return body

    def customer(self, customer_id: str) -> Customer:
        found = self.snapshots.get().customer(customer_id)
        if found is None:
            raise ApiError(404, f"customer {customer_id} not found")
        return found

    def _customer_row(self, customer_id: str) -> dict[str, Any] | None:
        row = (
            self.snapshots.get()
            ._conn.execute("SELECT payload FROM customers WHERE customer_id = ?", (customer_id,))
            .fetchone()
        )
        return json.loads(row[0]) if row else None

    def _row(self, customer_id: str, config_id: str) -> ConfigRow | None:
        return self.snapshots.get().config_by_dag_id(dag_id_for(customer_id, config_id))

    def list_configs(
        self,
        customer_id: str,
        *,
        provider: str | None,
        domain: str | None,
        active: bool | None,
        cursor: str | None,
        limit: int,
    ) -> dict[str, Any]:
        self.customer(customer_id)
        items: list[dict[str, Any]] = []
        after = cursor
        while len(items) < limit:
            rows = self.snapshots.get().configs_of_customer(customer_id, after=after, limit=limit * 2)
            if not rows:
                after = None
                break
            for row in rows:
                after = row.config_id
                data = row.row
                if provider and data.get("provider") != provider:
                    continue
                if domain and data.get("domain") != domain:
                    continue
                if active is not None and bool(data.get("is_active")) is not active:
                    continue
                items.append(config_view(data))
                if len(items) == limit:
                    break
        more = after is not None and bool(self.snapshots.get().configs_of_customer(customer_id, after=after, limit=1))
        return {"items": items, "next_cursor": after if more else None}

    def get_config(self, customer_id: str, config_id: str) -> dict[str, Any]:
        self.customer(customer_id)
        row = self._row(customer_id, config_id)
        if row is None:
            raise ApiError(404, f"config {config_id} of customer {customer_id} not found")
        return config_view(row.row)

    # -- config writes ------------------------------------------------------------------------

    def write_config(
        self,
        caller: Caller,
        customer_id: str,
        config_id: str,
        *,
        action: str,
        change: Callable[[dict[str, Any] | None], dict[str, Any]],
        expected_version: int | None = None,
        reason: str | None = None,
    ) -> WriteResult:
        """One change of one config, as the module docstring says."""
        customer = self.customer(customer_id)
        with self.ledger.config_writer(customer_id, config_id) as lock:
            found = self._row(customer_id, config_id)
            current = dict(found.row) if found else None
            head = max(lock.head(), int(current["version"]) if current else 0)
            if expected_version is not None and expected_version != head:
                raise ApiError(
                    409,
                    f"version conflict: config {config_id} is at version {head}, not {expected_version}",
                    extra={"current_version": head},
                )
            now = _now()
            new = change(current)
            new.update(
                customer_id=customer_id,
                config_id=config_id,
                version=head + 1,
                updated_at=now,
                updated_by=caller.audit_name,
            )
            new.setdefault("created_at", now)
            new.setdefault("created_by", caller.audit_name)
            for name in JSON_COLUMNS:
                new[name] = _json_text(new.get(name))
            row = {name: new.get(name) for name in CONFIG_COLUMNS}
            if not row.get("deleted_at"):
                try:
                    PipelineConfig.model_validate(row)
                except ValidationError as exc:
                    raise invalid_fields(exc) from None
            if not lock.claim(head + 1):
                raise ApiError(409, f"version conflict: config {config_id} was changed meanwhile; read it again")
            try:
                self.inserts.insert("customer_pipeline_configs", row, f"{customer_id}/{config_id}/v{head + 1}")
            except StoreError as exc:
                lock.release(head + 1)
                raise ApiError(
                    503, f"BigQuery did not take the change; nothing was written: {exc}", headers={"Retry-After": "5"}
                ) from None
            self.audit(caller, customer_id, config_id, action, current, row, reason)
            result = WriteResult(config_view(row), True)
            self._apply(result, customer, row)
        return result

    def audit(
        self,
        caller: Caller,
        customer_id: str,
        config_id: str | None,
        action: str,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
        reason: str | None,
    ) -> None:
        audit_id = uuid.uuid4().hex
        row = {
            "audit_id": audit_id,
            "config_id": config_id,
            "customer_id": customer_id,
            "action": action,
            "changed_by": caller.audit_name,
            "changed_at": _now(),
            "old_value": json.dumps(old, default=str, sort_keys=True) if old is not None else None,
            "new_value": json.dumps(new, default=str, sort_keys=True) if new is not None else None,
            "reason": reason,
        }
        try:
            self.inserts.insert("pipeline_schedule_audit", row, audit_id)
        except StoreError:
            # The change itself is in the version log (who, when, the whole row); the audit row is
            # its summary. Logged loudly rather than failing a change BigQuery already holds.
            log.exception("audit row %s of %s %s/%s not written", audit_id, action, customer_id, config_id)

    def _apply(self, result: WriteResult, customer: Customer, row: dict[str, Any]) -> None:
        """Step 5: the snapshot, the paused flag and a re-parse; failures converge at the next round."""
        dag_id = dag_id_for(str(row["customer_id"]), str(row["config_id"]))
        try:
            self.patcher.patch(configs=[row])
            config = None if row.get("deleted_at") else PipelineConfig.model_validate(row)
            # The paused flag first, then the re-parse: the parse holds the fleet's DAG rows while it
            # writes them. Unpausing before the parse fires no missed tick: a held config's DAG has
            # no next run until the parse gives it its new anchor.
            result.paused, result.unpaused = self.airflow.converge({dag_id: hold_reason(config, customer) is None})
            self.airflow.request_reparse([dag_id])
        except Exception as exc:
            log.exception("config %s written to BigQuery, not yet applied in Airflow", dag_id)
            result.applied_in_airflow = False
            result.airflow_detail = (
                f"{type(exc).__name__}: {exc}; BigQuery holds the change and the next sync round "
                f"(every {self.settings.sync_interval_seconds} s) applies it"
            )

    def create_config(self, caller: Caller, customer_id: str, body: dict[str, Any]) -> WriteResult:
        config_id = str(body["config_id"])
        self.customer(customer_id)
        for key, existing in self.snapshots.get().config_ids_by_key({customer_id}).items():
            if key == (customer_id, config_id_key(config_id)):
                raise ApiError(409, f"config {existing} of customer {customer_id} exists already")

        def change(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is not None:
                raise ApiError(409, f"config {config_id} of customer {customer_id} exists already")
            return {k: v for k, v in body.items() if k != "config_id"}

        return self.write_config(caller, customer_id, config_id, action="CREATE", change=change)

    def _existing(self, customer_id: str, config_id: str) -> Callable[[dict[str, Any] | None], dict[str, Any]]:
        def require(current: dict[str, Any] | None) -> dict[str, Any]:
            if current is None:
                raise ApiError(404, f"config {config_id} of customer {customer_id} not found")
            return dict(current)

        return require

    def update_config(
        self, caller: Caller, customer_id: str, config_id: str, changes: dict[str, Any], expected: int | None
    ) -> WriteResult:
        require = self._existing(customer_id, config_id)

        def change(current: dict[str, Any] | None) -> dict[str, Any]:
            return {**require(current), **changes}

        return self.write_config(
            caller, customer_id, config_id, action="UPDATE", change=change, expected_version=expected
        )

    def set_active(
        self,
        caller: Caller,
        customer_id: str,
        config_id: str,
        active: bool,
        expected: int | None = None,
        reason: str | None = None,
    ) -> WriteResult:
        require = self._existing(customer_id, config_id)
        return self.write_config(
            caller,
            customer_id,
            config_id,
            action="ENABLE" if active else "PAUSE",
            change=lambda current: {**require(current), "is_active": active},
            expected_version=expected,
            reason=reason,
        )

    def delete_config(self, caller: Caller, customer_id: str, config_id: str, expected: int | None) -> WriteResult:
        require = self._existing(customer_id, config_id)
        return self.write_config(
            caller,
            customer_id,
            config_id,
            action="DELETE",
            change=lambda current: {**require(current), "deleted_at": _now()},
            expected_version=expected,
        )

    def set_all_active(self, caller: Caller, customer_id: str, active: bool) -> dict[str, Any]:
        """Pause or resume every config of a customer: one version each (only those that change)."""
        self.customer(customer_id)
        changed, failed = [], []
        for row in self.snapshots.get().configs_of_customer(customer_id):
            if bool(row.row.get("is_active")) is active:
                continue
            try:
                self.set_active(caller, customer_id, row.config_id, active, reason="all configs of the customer")
                changed.append(row.config_id)
            except ApiError as exc:
                failed.append({"config_id": row.config_id, "status": exc.status, "detail": exc.detail})
        return {"changed": changed, "failed": failed}

    # -- preview ------------------------------------------------------------------------------

    def preview(self, customer_id: str, body: dict[str, Any], count: int = 10) -> dict[str, Any]:
        """Validate a config without saving it; its next ``count`` fire times, local and UTC."""
        row = {**body, "customer_id": customer_id, "config_id": body.get("config_id") or "preview"}
        for name in JSON_COLUMNS:
            row[name] = _json_text(row.get(name))
        try:
            config = PipelineConfig.model_validate(row)
        except ValidationError as exc:
            raise invalid_fields(exc) from None
        timetable = schedule_of(config.schedule_cron, config.timezone)
        ticks, moment = [], _now()
        for _ in range(count):
            moment = timetable._get_next(moment)
            local = moment.in_timezone(config.timezone) if hasattr(moment, "in_timezone") else moment
            starts = (moment + config.start_offset).astimezone(UTC)
            ticks.append(
                {"local": local.isoformat(), "utc": moment.astimezone(UTC).isoformat(), "starts_at": starts.isoformat()}
            )
        return {
            "valid": True,
            "schedule_cron": config.schedule_cron,
            "timezone": config.timezone,
            "start_window_minutes": config.start_window_minutes,
            "start_offset_seconds": int(config.start_offset.total_seconds()),
            "next_runs": ticks,
        }

    # -- runs, usage, fleet -------------------------------------------------------------------

    def runs(
        self,
        customer_id: str,
        *,
        config_id: str | None,
        state: str | None,
        since: datetime | None,
        until: datetime | None,
        cursor: str | None,
        limit: int,
    ) -> dict[str, Any]:
        self.customer(customer_id)
        until = until or _now() + timedelta(days=1)
        since = since or until - timedelta(days=30)
        cursor_time, cursor_key = until, ""
        if cursor:
            try:
                time_text, cursor_key = cursor.split("|", 1)
                cursor_time = datetime.fromisoformat(time_text)
            except ValueError:
                raise invalid("cursor", "not a cursor this API gave") from None
        try:
            rows = self.store.query(
                "queries/runs_of_customer.sql",
                {
                    "customer_id": customer_id,
                    "config_id": config_id or "",
                    "state": state or "",
                    "since": since,
                    "cursor_time": cursor_time,
                    "cursor_key": cursor_key,
                    "limit": limit,
                },
            )
        except StoreError as exc:
            raise ApiError(
                503, f"the run history (BigQuery) cannot be read now: {exc}", headers={"Retry-After": "10"}
            ) from None
        items = [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows]
        last = rows[-1] if len(rows) == limit else None
        next_cursor = f"{last['scheduled_time'].isoformat()}|{last['run_key']}" if last else None
        return {"items": items, "next_cursor": next_cursor}

    def usage(self, customer_id: str) -> dict[str, Any]:
        customer = self.customer(customer_id)
        today = _now().date()
        used_today, used_month = self.ledger.usage(customer_id, today, today.replace(day=1))
        running, slots = self.airflow.running_in_pool(pool_name_for(customer_id, self.settings.pool_prefix))
        return {
            "customer_id": customer_id,
            "plan": customer.plan.value if customer.plan else None,
            "status": customer.status.value,
            "today": {"used": used_today, "limit": customer.daily_run_limit, "day": today.isoformat()},
            "this_month": {"used": used_month, "limit": customer.monthly_run_limit},
            "concurrency": {"running": running, "limit": customer.max_concurrent_runs, "pool_slots": slots},
        }

    def trigger(self, caller: Caller, customer_id: str, config_id: str, conf: dict[str, Any]) -> dict[str, Any]:
        customer = self.customer(customer_id)
        found = self._row(customer_id, config_id)
        if found is None:
            raise ApiError(404, f"config {config_id} of customer {customer_id} not found")
        try:
            config = PipelineConfig.model_validate(found.row)
        except ValidationError as exc:
            raise ApiError(409, f"config {config_id} is invalid and cannot run: {invalid_fields(exc).detail}") from None
        held = hold_reason(config, customer)
        if held is not None:
            raise ApiError(409, f"config {config_id} cannot run now: {held.value}", extra={"reason": held.value})
        today = _now().date()
        used_today, used_month = self.ledger.usage(customer_id, today, today.replace(day=1))
        for name, used, limit in (
            ("DAILY_LIMIT", used_today, customer.daily_run_limit),
            ("MONTHLY_LIMIT", used_month, customer.monthly_run_limit),
        ):
            if limit is not None and used >= limit:
                raise ApiError(
                    429,
                    f"quota exceeded: {name} ({used} of {limit} runs used)",
                    extra={"limit": name, "used": used, "quota": limit},
                )
        run_id = f"api__{_now().strftime('%Y%m%dT%H%M%S')}_{uuid.uuid4().hex[:8]}"
        try:
            run = self.airflow.trigger(config.dag_id, run_id, conf)
        except Exception as exc:  # noqa: BLE001 - Airflow's own errors (DAG not parsed yet, ...)
            raise ApiError(409, f"Airflow did not create the run: {type(exc).__name__}: {exc}") from None
        self.audit(caller, customer_id, config_id, "TRIGGER", None, run, None)
        return run

    def fleet_status(self) -> dict[str, Any]:
        from customer_pipelines.fleet.sync import Fleet
        from customer_pipelines.runs.mirror import RunStateMirror

        now = _now()
        snapshot = self.snapshots.get()
        fleet = Fleet.of(snapshot)
        soon = now + timedelta(minutes=15)
        due = []
        for config in fleet.configs:
            if fleet.is_runnable(config):
                # when the run starts: the next tick plus the config's start offset (its window)
                offset = config.start_offset
                starts = schedule_of(config.schedule_cron, config.timezone).next_tick(now - offset) + offset
                if starts <= soon:
                    due.append((starts, config.dag_id))
        due.sort()
        figures = self.airflow.fleet_figures(
            self.settings.pool_prefix, now.replace(hour=0, minute=0, second=0, microsecond=0)
        )
        mirror = RunStateMirror(self.store, self.settings.spool_dir)
        written = datetime.fromisoformat(snapshot.meta["written_at"])
        return {
            "configs": len(fleet.configs),
            "customers": len(fleet.customers),
            "due_in_15_minutes": len(due),
            "due_soon": [{"dag_id": d, "at": t.isoformat()} for t, d in due[:50]],
            **figures,
            "mirror_backlog": mirror.backlog(),
            "mirror_rejected": mirror.rejected(),
            "snapshot_age_seconds": round((now - written).total_seconds(), 1),
            # BigQuery calls this API server made since it started, by kind (the benchmark reads them)
            "api_bigquery_calls": dict(self.store.calls),
            "snapshot_source": snapshot.meta.get("source"),
            "snapshot_patched_by": snapshot.meta.get("patched_by"),
        }

    # -- customers and keys -------------------------------------------------------------------

    def customer_view(self, customer_id: str) -> dict[str, Any]:
        customer = self.customer(customer_id)
        row = self._customer_row(customer_id) or {}
        return {
            **customer.model_dump(mode="json"),
            "admin_email": row.get("admin_email"),
            "hold_reason": (reason.value if (reason := customer_hold_reason(customer)) else None),
            "api_keys": [
                {"key_id": k.key_id, "created_at": k.created_at, "expires_at": k.expires_at}
                for k in self.keys.of_customer(customer_id)
            ],
        }

    def onboard(self, caller: Caller, body: dict[str, Any]) -> dict[str, Any]:
        customer_id = body["customer_id"]
        try:
            Customer.model_validate(
                {"customer_id": customer_id, "status": "ACTIVE", "company_name": body["company_name"]}
            )
        except ValidationError as exc:
            raise invalid_fields(exc) from None
        if self.snapshots.get().customer(customer_id) is not None:
            raise ApiError(409, f"customer {customer_id} exists already")
        now = _now()
        customer = {
            "customer_id": customer_id,
            "company_name": body["company_name"],
            "admin_email": body.get("admin_email"),
            "status": "ACTIVE",
            "created_at": now,
            "updated_at": now,
        }
        subscription = self._subscription(customer_id, body, now)
        issued = new_key(customer_id, expires_at=_future_or_none(body.get("key_expires_at"), "key_expires_at"), now=now)
        try:
            self.store.insert_rows("customers", [customer], row_ids=[f"{customer_id}/{now.isoformat()}"])
            self.store.insert_rows("customer_subscriptions", [subscription], row_ids=[subscription["subscription_id"]])
            self.store.insert_rows("customer_api_keys", [issued.row], row_ids=[f"{issued.key_id}/issued"])
        except StoreError as exc:
            raise ApiError(
                503, f"BigQuery did not take the new customer: {exc}", headers={"Retry-After": "5"}
            ) from None
        self.keys.add(issued.row)
        self.audit(caller, customer_id, None, "ONBOARD", None, {**customer, "plan": subscription["plan"]}, None)
        applied = self._apply_customer(customer, subscription)
        return {**self.customer_view(customer_id), "api_key": issued.key, "applied_in_airflow": applied}

    def _subscription(self, customer_id: str, body: dict[str, Any], now: datetime) -> dict[str, Any]:
        plan = str(body["plan"])
        daily, monthly, concurrent = PLAN_LIMITS[plan]
        return {
            "subscription_id": f"sub_{customer_id}_{uuid.uuid4().hex[:12]}",
            "customer_id": customer_id,
            "plan": plan,
            "daily_run_limit": body.get("daily_run_limit") if body.get("daily_run_limit") is not None else daily,
            "monthly_run_limit": body.get("monthly_run_limit")
            if body.get("monthly_run_limit") is not None
            else monthly,
            "max_concurrent_runs": (
                body.get("max_concurrent_runs") if body.get("max_concurrent_runs") is not None else concurrent
            ),
            "valid_from": now,
            "valid_until": None,
            "created_at": now,
            "updated_at": now,
        }

    def _apply_customer(self, customer_row: dict[str, Any], subscription: dict[str, Any] | None) -> bool:
        """The customer as the snapshot holds it (customer and plan in force), its pool, and its
        DAGs' paused flags; False if Airflow is not updated yet (the next sync round does it)."""
        customer_id = customer_row["customer_id"]
        merged = {**(self._customer_row(customer_id) or {}), **customer_row}
        if subscription is not None:
            merged.update(
                {k: subscription[k] for k in ("plan", "daily_run_limit", "monthly_run_limit", "max_concurrent_runs")}
            )
        merged = {
            k: merged.get(k)
            for k in (
                "customer_id",
                "company_name",
                "admin_email",
                "status",
                "plan",
                "daily_run_limit",
                "monthly_run_limit",
                "max_concurrent_runs",
            )
        }
        try:
            self.patcher.patch(customers=[merged])
            customer = Customer.model_validate(merged)
            [(pool, spec)] = desired_pools({customer_id: customer}, self.settings.pool_prefix).items()
            self.airflow.set_pool(pool, spec.slots, spec.description)
            runnable = {}
            for row in self.snapshots.get().configs_of_customer(customer_id):
                parsed = parse_config(row.row)
                if isinstance(parsed, PipelineConfig):  # an invalid config has no DAG to pause
                    runnable[parsed.dag_id] = hold_reason(parsed, customer) is None
            if runnable:
                self.airflow.converge(runnable)
                self.airflow.request_reparse(runnable)
            return True
        except Exception:
            log.exception("customer %s written to BigQuery, not yet applied in Airflow", customer_id)
            return False

    def change_plan(self, caller: Caller, customer_id: str, body: dict[str, Any]) -> dict[str, Any]:
        before = self.customer(customer_id)
        subscription = self._subscription(customer_id, body, _now())
        try:
            self.store.insert_rows("customer_subscriptions", [subscription], row_ids=[subscription["subscription_id"]])
        except StoreError as exc:
            raise ApiError(503, f"BigQuery did not take the plan change: {exc}", headers={"Retry-After": "5"}) from None
        self.audit(caller, customer_id, None, "CHANGE_PLAN", before.model_dump(mode="json"), subscription, None)
        applied = self._apply_customer({"customer_id": customer_id}, subscription)
        return {**self.customer_view(customer_id), "applied_in_airflow": applied}

    def set_status(self, caller: Caller, customer_id: str, status: str) -> dict[str, Any]:
        before = self.customer(customer_id)
        row = {**(self._customer_row(customer_id) or {}), "customer_id": customer_id, "status": status}
        now = _now()
        bq_row = {
            "customer_id": customer_id,
            "company_name": row.get("company_name") or customer_id,
            "admin_email": row.get("admin_email"),
            "status": status,
            "created_at": row.get("created_at") or now,
            "updated_at": now,
        }
        try:
            self.store.insert_rows("customers", [bq_row], row_ids=[f"{customer_id}/{now.isoformat()}"])
        except StoreError as exc:
            raise ApiError(503, f"BigQuery did not take the change: {exc}", headers={"Retry-After": "5"}) from None
        action = "SUSPEND" if status == "SUSPENDED" else "REACTIVATE"
        self.audit(caller, customer_id, None, action, {"status": before.status.value}, {"status": status}, None)
        applied = self._apply_customer({"customer_id": customer_id, "status": status}, None)
        return {**self.customer_view(customer_id), "applied_in_airflow": applied}

    def issue_key(self, caller: Caller, customer_id: str, expires_at: datetime | None) -> dict[str, Any]:
        self.customer(customer_id)
        issued = new_key(customer_id, expires_at=_future_or_none(expires_at))
        try:
            self.store.insert_rows("customer_api_keys", [issued.row], row_ids=[f"{issued.key_id}/issued"])
        except StoreError as exc:
            raise ApiError(503, f"BigQuery did not take the key: {exc}", headers={"Retry-After": "5"}) from None
        self.keys.add(issued.row)
        self.audit(
            caller, customer_id, None, "ISSUE_KEY", None, {"key_id": issued.key_id, "expires_at": expires_at}, None
        )
        return {"key_id": issued.key_id, "api_key": issued.key, "expires_at": expires_at}

    def revoke_key(self, caller: Caller, customer_id: str, key_id: str) -> dict[str, Any]:
        record = next((k for k in self.keys.of_customer(customer_id) if k.key_id == key_id), None)
        if record is None:
            raise ApiError(404, f"API key {key_id} of customer {customer_id} not found (or revoked already)")
        now = _now()
        row = {
            "key_id": key_id,
            "customer_id": customer_id,
            "key_prefix": f"cpk_{key_id}",
            "key_hash": record.key_hash,
            "scopes": ["customer"],
            "created_at": record.created_at or now,
            "expires_at": record.expires_at,
            "revoked_at": now,
        }
        try:
            self.store.insert_rows("customer_api_keys", [row], row_ids=[f"{key_id}/revoked"])
        except StoreError as exc:
            raise ApiError(503, f"BigQuery did not take the revocation: {exc}", headers={"Retry-After": "5"}) from None
        self.keys.revoke(key_id)
        self.audit(caller, customer_id, None, "REVOKE_KEY", {"key_id": key_id}, {"revoked_at": now}, None)
        return {"key_id": key_id, "revoked_at": now}

    def rotate_key(self, caller: Caller, customer_id: str, key_id: str, expires_at: datetime | None) -> dict[str, Any]:
        """A new key, then the old one revoked: a client switches with no moment without a key."""
        issued = self.issue_key(caller, customer_id, expires_at)
        self.revoke_key(caller, customer_id, key_id)
        return {**issued, "replaces": key_id}
