"""The local config snapshot DAG files read instead of BigQuery.

A snapshot is one SQLite file (indexed by dag id and shard bucket, so a worker reads one row, not
the fleet). A config is identified by (customer_id, config_id), never config_id alone: two
customers may both have a config named ``daily_cost``. It is written beside its final path and
swapped in with ``os.replace``, so a reader sees the old file or the new one, never half of one;
the previous generation is kept as ``.prev`` and read when the current file is missing or
unreadable.

Each runnable config also carries the moment it became runnable (``runnable_since``), carried over
from the previous generation while it stays runnable with the same schedule: the anchor of its DAG's
first tick (see timetables.py), which must not move between parses or refreshes."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import string
import threading
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from customer_pipelines.models import (
    ConfigError,
    Customer,
    PipelineConfig,
    dag_id_for,
    first_errors,
    is_runnable,
    parse_config,
    printable,
)
from customer_pipelines.private_files import open_private

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3
BUCKETS = 4096
"""Configs hash (by dag id) into this many buckets; a shard file takes the buckets
``b % shards == i``, so a config's shard depends on its own identity only."""

_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE customers (customer_id TEXT PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE configs (
  config_id TEXT NOT NULL,
  customer_id TEXT,
  dag_id TEXT,
  bucket INTEGER NOT NULL,
  payload TEXT NOT NULL,
  runnable_since TEXT,  -- ISO time the config became runnable with this schedule; NULL: not runnable
  schedule TEXT         -- cron and timezone the anchor belongs to
);
CREATE TABLE duplicate_configs (config_id TEXT NOT NULL, customer_id TEXT, payload TEXT NOT NULL);
CREATE UNIQUE INDEX configs_by_dag_id ON configs (dag_id);
CREATE INDEX configs_by_bucket ON configs (bucket);
CREATE INDEX configs_by_customer ON configs (customer_id, config_id);
"""


class SnapshotError(RuntimeError):
    """No readable snapshot (neither the current file nor the previous generation)."""


def bucket_of(key: str) -> int:
    return zlib.crc32(key.encode()) % BUCKETS


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass(frozen=True)
class PreviousAnchors:
    """What the generation being replaced knew: when it was written, and each runnable DAG's anchor
    with the schedule it was taken for."""

    written_at: datetime
    anchors: dict[str, tuple[datetime, str]]


def _schedule_of(config: PipelineConfig) -> str:
    return f"{config.schedule_cron}|{config.timezone}"


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def runnable_anchors(
    configs: Sequence[PipelineConfig],
    customers: Mapping[str, Customer],
    previous: PreviousAnchors | None,
    now: datetime,
) -> dict[str, tuple[datetime, str]]:
    """dag_id -> (runnable since, schedule) for every runnable config.

    - runnable before with the same schedule: its anchor is kept (stable across refreshes);
    - no previous generation at all (a fleet's first deploy): now, so no tick from before the
      platform knew the config fires;
    - otherwise it became runnable (created, enabled, its customer reactivated, its schedule
      changed) after the previous generation was written: at its own ``updated_at`` if that is
      later, so a config created at 01:59:50 still runs its 02:00 tick when this refresh comes at
      02:00:30, and never a tick from before it existed."""
    anchors: dict[str, tuple[datetime, str]] = {}
    for config in configs:
        if not is_runnable(config, customers.get(config.customer_id)):
            continue
        schedule = _schedule_of(config)
        kept = previous.anchors.get(config.dag_id) if previous else None
        if kept is not None and kept[1] == schedule:
            anchors[config.dag_id] = kept
        elif previous is None:
            anchors[config.dag_id] = (now, schedule)
        else:
            changed = _utc(config.updated_at) if config.updated_at else previous.written_at
            anchors[config.dag_id] = (min(now, max(previous.written_at, changed)), schedule)
    return anchors


def previous_anchors(path: Path) -> PreviousAnchors | None:
    """The anchors of the last good generation at ``path``; None when there is none readable."""
    try:
        snapshot = Snapshot.open_last_good(path)
    except SnapshotError:
        return None
    with snapshot:
        return PreviousAnchors(datetime.fromisoformat(snapshot.meta["written_at"]), snapshot.anchors())


def _valid_customers(rows: Sequence[Mapping[str, Any]]) -> dict[str, Customer]:
    customers = {}
    for row in rows:
        try:
            customer = Customer.model_validate(dict(row))
        except ValueError:
            continue  # an invalid customer runs nothing; Snapshot.customers() logs it
        customers[customer.customer_id] = customer
    return customers


def write_snapshot(
    path: Path,
    customers: Sequence[Mapping[str, Any]],
    configs: Sequence[Mapping[str, Any]],
    *,
    source: str,
    now: datetime | None = None,
    anchors: Mapping[str, tuple[datetime, str]] | None = None,
) -> Path:
    """Write a complete snapshot and swap it in atomically; returns the path. ``anchors`` are the
    caller's if it computed them already (refresh_snapshot, for its guard), else computed here
    against the generation being replaced."""
    now = now or datetime.now(UTC)
    if anchors is None:
        parsed = [parse_config(dict(row)) for row in configs]
        anchors = runnable_anchors(
            [c for c in parsed if isinstance(c, PipelineConfig)],
            _valid_customers(customers),
            previous_anchors(path),
            now,
        )
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    # Every tenant's configs: created owner-only (SQLite gives its journal the database's mode).
    open_private(tmp, exclusive=True).close()
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(_DDL)
        conn.executemany(
            "INSERT INTO customers VALUES (?, ?)",
            [(str(c["customer_id"]), json.dumps(dict(c), default=_json_default)) for c in customers],
        )
        rows, duplicates = [], []
        for (customer_id, _), clashing in _group_by_identity(configs).items():
            kept, rejected = _oldest_of(clashing)
            duplicates += [(_config_id_of(row), customer_id, _payload(row)) for row in rejected]
            if kept is None:
                continue
            config_id = _config_id_of(kept)
            dag_id = dag_id_for(customer_id, config_id) if customer_id else None
            since, schedule = anchors.get(dag_id or "", (None, None))
            bucket = bucket_of(dag_id or config_id)
            rows.append((config_id, customer_id, dag_id, bucket, _payload(kept), since and since.isoformat(), schedule))
        conn.executemany("INSERT INTO configs VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO duplicate_configs VALUES (?, ?, ?)", duplicates)
        meta = {
            "schema_version": str(SCHEMA_VERSION),
            "written_at": now.isoformat(),
            "source": source,
            "configs": str(len(rows)),
            "customers": str(len(customers)),
        }
        conn.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
        conn.commit()
    finally:
        conn.close()
    return _swap_in(tmp, path)


def _swap_in(tmp: Path, path: Path) -> Path:
    """Make the complete file ``tmp`` the snapshot at ``path``: synced to disk, the current
    generation kept as ``.prev``, then one atomic rename, so a reader sees the old file or the new."""
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    previous = path.with_name(path.name + ".prev")
    if path.exists():
        previous.unlink(missing_ok=True)
        os.link(path, previous)
    os.replace(tmp, path)
    return path


def _payload(row: Mapping[str, Any]) -> str:
    return json.dumps(dict(row), default=_json_default, sort_keys=True)


_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


def config_id_key(config_id: str) -> str:
    """A config's identity within its customer: its id ignoring the letter case of ASCII letters
    (the only letters an id may hold). ``Daily_Cost`` and ``daily_cost`` of one customer are one
    config: two DAGs whose ids differ only in case confuse people, and collide wherever a name is
    compared without case (log folders on a case-insensitive file system, a MySQL collation)."""
    return config_id.translate(_ASCII_LOWER)


def _config_id_of(row: Mapping[str, Any]) -> str:
    return str(row.get("config_id", ""))


def _group_by_identity(configs: Sequence[Mapping[str, Any]]) -> dict[tuple[str | None, str], list[Mapping[str, Any]]]:
    groups: dict[tuple[str | None, str], list[Mapping[str, Any]]] = {}
    for row in configs:
        customer_id = row.get("customer_id")
        key = (str(customer_id) if customer_id is not None else None, config_id_key(_config_id_of(row)))
        groups.setdefault(key, []).append(row)
    return groups


def _oldest_of(
    clashing: list[Mapping[str, Any]],
) -> tuple[Mapping[str, Any] | None, list[Mapping[str, Any]]]:
    """Rows of one customer claiming one config_id, compared ignoring case (BigQuery enforces no
    uniqueness): the oldest
    keeps the DAG and every newer row is rejected, so a row added later can never take over or
    remove an existing config; rows that cannot be ordered (same or no created_at) are all rejected."""
    if len(clashing) == 1:
        return clashing[0], []
    ordered = sorted(clashing, key=lambda row: str(row.get("created_at") or ""))
    first, second = (str(row.get("created_at") or "") for row in ordered[:2])
    if not first or first == second:
        return None, ordered
    return ordered[0], ordered[1:]


@dataclass(frozen=True)
class ConfigRow:
    config_id: str
    dag_id: str | None
    bucket: int
    row: dict[str, Any]
    runnable_since: datetime | None = None
    """When the config became runnable (its DAG's first-tick anchor); None: it must not run."""

    @classmethod
    def of(cls, config_id: str, dag_id: str | None, bucket: int, payload: str, since: str | None) -> ConfigRow:
        return cls(config_id, dag_id, bucket, json.loads(payload), datetime.fromisoformat(since) if since else None)


_CONFIG_COLUMNS = "config_id, dag_id, bucket, payload, runnable_since"


class Snapshot:
    """A read-only view of one snapshot file."""

    def __init__(self, path: Path, *, checked: bool = False) -> None:
        """``checked``: this very file passed the whole-file check already (the API's reader, opening
        a generation another of its threads checked); never changed in place, it still passes."""
        self.path = path
        # immutable=1: the file is never changed in place (only replaced), so no locking is needed.
        self._conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        # A whole-file check: a file whose meta is readable but whose config pages are damaged must
        # fall back to the previous generation, not serve zero DAGs.
        check = None if checked else self._conn.execute("PRAGMA quick_check").fetchone()
        if not checked and (not check or check[0] != "ok"):
            raise sqlite3.DatabaseError(f"integrity check failed: {check}")
        self.meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        if int(self.meta.get("schema_version", 0)) != SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"snapshot schema {self.meta.get('schema_version')} != {SCHEMA_VERSION}")

    @classmethod
    def open_last_good(cls, path: Path) -> Snapshot:
        """The current snapshot, or the previous generation when the current one is unreadable."""
        errors = []
        for candidate in (path, path.with_name(path.name + ".prev")):
            if not candidate.exists():
                errors.append(f"{candidate}: missing")
                continue
            try:
                return cls(candidate)
            except sqlite3.DatabaseError as exc:
                errors.append(f"{candidate}: {exc}")
                log.error("config snapshot %s is unreadable: %s", candidate, exc)
        raise SnapshotError("no readable config snapshot: " + "; ".join(errors))

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def customers(self) -> dict[str, Customer]:
        """Every valid customer; an invalid row is logged and left out (its configs have no customer)."""
        rows = self._conn.execute("SELECT customer_id, payload FROM customers")
        return {c: customer for c, payload in rows if (customer := _customer_or_none(c, payload)) is not None}

    def customer(self, customer_id: str) -> Customer | None:
        """One customer as ``customers()`` has it: None when missing or invalid."""
        found = self._conn.execute("SELECT payload FROM customers WHERE customer_id = ?", (customer_id,)).fetchone()
        return _customer_or_none(customer_id, found[0]) if found else None

    def configs(self, *, shard: int | None = None, shards: int = 1) -> Iterator[ConfigRow]:
        if shard is None:
            cursor = self._conn.execute(f"SELECT {_CONFIG_COLUMNS} FROM configs ORDER BY config_id")
        else:
            cursor = self._conn.execute(
                f"SELECT {_CONFIG_COLUMNS} FROM configs WHERE bucket % ? = ? ORDER BY config_id", (shards, shard)
            )
        for found in cursor:
            yield ConfigRow.of(*found)

    def duplicate_configs(self) -> list[tuple[str | None, str]]:
        """(customer_id, config_id) of the rows rejected because an older row of the same customer
        claims that config_id, ignoring case (or the clash could not be ordered)."""
        return list(self._conn.execute("SELECT DISTINCT customer_id, config_id FROM duplicate_configs ORDER BY 1, 2"))

    def config_ids_by_key(self, customer_ids: set[str | None]) -> dict[tuple[str | None, str], str]:
        """(customer_id, config_id_key) -> the config id that kept the identity, for these customers
        (one pass over the configs, however many duplicates there are)."""
        if not customer_ids:
            return {}
        return {
            (customer_id, config_id_key(config_id)): config_id
            for customer_id, config_id in self._conn.execute("SELECT customer_id, config_id FROM configs")
            if customer_id in customer_ids
        }

    def configs_of_customer(
        self, customer_id: str, *, after: str | None = None, limit: int | None = None
    ) -> list[ConfigRow]:
        """One customer's configs in config_id order, those after ``after`` (a cursor), at most
        ``limit``: read through the (customer_id, config_id) index, never the whole fleet."""
        found = self._conn.execute(
            f"SELECT {_CONFIG_COLUMNS} FROM configs WHERE customer_id = ? AND config_id > ? ORDER BY config_id"
            + (" LIMIT ?" if limit is not None else ""),
            (customer_id, after or "", *([limit] if limit is not None else [])),
        )
        return [ConfigRow.of(*row) for row in found]

    def config_by_dag_id(self, dag_id: str) -> ConfigRow | None:
        found = self._conn.execute(f"SELECT {_CONFIG_COLUMNS} FROM configs WHERE dag_id = ?", (dag_id,)).fetchone()
        return ConfigRow.of(*found) if found else None

    def anchors(self) -> dict[str, tuple[datetime, str]]:
        """dag_id -> (runnable since, schedule) of every runnable config."""
        return {
            dag_id: (datetime.fromisoformat(since), schedule)
            for dag_id, since, schedule in self._conn.execute(
                "SELECT dag_id, runnable_since, schedule FROM configs WHERE runnable_since IS NOT NULL"
            )
        }


def _customer_or_none(customer_id: str, payload: str) -> Customer | None:
    try:
        return Customer.model_validate_json(payload)
    except ValidationError as exc:
        log.error("customer %s in the snapshot is invalid: %s", printable(customer_id), first_errors(exc))
        return None


@dataclass(frozen=True)
class RefreshResult:
    path: Path
    configs: int
    customers: int
    invalid: list[Any]
    changed_dag_ids: frozenset[str] | None = None
    """The DAGs that may differ after this refresh (their shards are parsed again); None: any."""


class RefreshRefused(RuntimeError):
    """A refresh that would stop too much of the fleet at once (a query that returned nothing, a
    broken join): the last good snapshot stays until a person forces it."""


@dataclass(frozen=True)
class RefreshGuard:
    """Refuse a refresh that would stop more than ``max(min_dags, share x running)`` running DAGs,
    and one whose result is empty (no configs or no customers) while DAGs are running, however few:
    a query that returned nothing must not empty a fleet smaller than ``min_dags`` either."""

    share: float = 0.25
    min_dags: int = 100

    @classmethod
    def of(cls, settings: Any) -> RefreshGuard:
        """The guard the settings ask for (CP_REFRESH_GUARD_SHARE, CP_REFRESH_GUARD_MIN_DAGS)."""
        return cls(settings.refresh_guard_share, settings.refresh_guard_min_dags)

    def check(self, running_before: set[str], running_after: set[str], *, empty_result: bool = False) -> None:
        stopped = running_before - running_after
        if empty_result and running_before:
            raise RefreshRefused(
                f"snapshot refresh refused: it would stop {len(stopped)} of {len(running_before)} running DAGs "
                f"(BigQuery returned no configs or no customers), e.g. {sorted(stopped)[:3]}; the last good "
                "snapshot stays. If intended: python -m customer_pipelines snapshot refresh --force"
            )
        allowed = max(self.min_dags, int(self.share * len(running_before)))
        if len(stopped) > allowed:
            raise RefreshRefused(
                f"snapshot refresh refused: it would stop {len(stopped)} of {len(running_before)} running DAGs "
                f"(more than {allowed}: max({self.min_dags}, {self.share:.0%})), e.g. {sorted(stopped)[:3]}; "
                "the last good snapshot stays. If intended: python -m customer_pipelines snapshot refresh --force"
            )


@contextmanager
def refresh_lock(path: Path, *, timeout: float = 120) -> Iterator[None]:
    """One writer of a snapshot at a time (two syncers, or a syncer and a CLI refresh, would race on
    the temp file and the ``.prev`` link): an exclusive lock on a file beside it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = path.with_name(f".{path.name}.lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{lock_path} is held by another syncer or refresh for {timeout:.0f}s") from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def refresh_snapshot(
    store: Any, path: Path, *, guard: RefreshGuard | None = None, force: bool = False
) -> RefreshResult:
    """Read configs and customers from the store and swap in a new snapshot. If BigQuery fails, or
    the guard refuses the new generation (unless ``force``), the exception propagates and the last
    good snapshot stays in place untouched. The caller holds ``refresh_lock``."""
    customers = store.fetch_customers()
    configs = store.fetch_configs()
    parsed = [parse_config(row) for row in configs]
    previous = previous_anchors(path)
    now = datetime.now(UTC)
    valid = [c for c in parsed if isinstance(c, PipelineConfig)]
    anchors = runnable_anchors(valid, _valid_customers(customers), previous, now)
    if previous is not None and not force:
        (guard or RefreshGuard()).check(set(previous.anchors), set(anchors), empty_result=not configs or not customers)
    write_snapshot(
        path,
        customers,
        configs,
        source=f"bigquery:{store.settings.bq_project}.{store.settings.bq_dataset}",
        now=now,
        anchors=anchors,
    )
    invalid = [r for r in parsed if isinstance(r, ConfigError)]
    for error in invalid:
        log.warning("invalid pipeline config: %s", error)
    return RefreshResult(path=path, configs=len(configs), customers=len(customers), invalid=invalid)


def patch_snapshot(
    path: Path,
    *,
    configs: Sequence[Mapping[str, Any]] = (),
    customers: Sequence[Mapping[str, Any]] = (),
    source: str,
    now: datetime | None = None,
) -> Path:
    """A new generation of the snapshot at ``path``: a copy of the last good one with these rows of
    BigQuery's written in (a config row whose ``deleted_at`` is set is removed; a customer row
    replaces the customer's), swapped in atomically like a refresh. What the API calls after its own
    writes, so its reads and the next parse see them at once. It costs a file copy and a few indexed
    statements: only the changed configs, and those of changed customers, get a new first-tick
    anchor; every other row is copied as it is. The caller holds ``refresh_lock``."""
    now = now or datetime.now(UTC)
    with Snapshot.open_last_good(path) as snapshot:
        source_file = snapshot.path
        written_at = datetime.fromisoformat(snapshot.meta["written_at"])
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    with open(source_file, "rb") as src, open_private(tmp, "wb", exclusive=True) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    conn = sqlite3.connect(tmp)
    try:
        _apply_patch(conn, configs, customers, written_at, now)
        conn.execute("UPDATE meta SET value = ? WHERE key = 'written_at'", (now.isoformat(),))
        # ``source`` stays where the rows came from (a BigQuery dataset); the patch is recorded apart.
        conn.execute("INSERT OR REPLACE INTO meta VALUES ('patched_by', ?)", (source,))
        for table in ("configs", "customers"):  # meta counts each table's rows under its name
            conn.execute(f"UPDATE meta SET value = (SELECT COUNT(*) FROM {table}) WHERE key = ?", (table,))
        conn.commit()
    finally:
        conn.close()
    return _swap_in(tmp, path)


def _apply_patch(
    conn: sqlite3.Connection,
    configs: Sequence[Mapping[str, Any]],
    customers: Sequence[Mapping[str, Any]],
    written_at: datetime,
    now: datetime,
) -> None:
    for customer in customers:
        conn.execute(
            "INSERT OR REPLACE INTO customers VALUES (?, ?)",
            (str(customer["customer_id"]), json.dumps(dict(customer), default=_json_default)),
        )
    changed = {dag_id_for(str(c["customer_id"]), str(c["config_id"])): c for c in configs}
    touched: dict[str, Mapping[str, Any]] = dict(changed)
    for customer in customers:
        for dag_id, payload in conn.execute(
            "SELECT dag_id, payload FROM configs WHERE customer_id = ?", (str(customer["customer_id"]),)
        ):
            touched.setdefault(dag_id, json.loads(payload))
    if not touched:
        return
    marks = ",".join("?" * len(touched))
    kept = {
        dag_id: (datetime.fromisoformat(since), schedule)
        for dag_id, since, schedule in conn.execute(
            f"SELECT dag_id, runnable_since, schedule FROM configs"
            f" WHERE dag_id IN ({marks}) AND runnable_since IS NOT NULL",
            list(touched),
        )
    }
    owners = {str(row.get("customer_id")) for row in touched.values()}
    customer_rows = [
        json.loads(payload)
        for (payload,) in conn.execute(
            f"SELECT payload FROM customers WHERE customer_id IN ({','.join('?' * len(owners))})", list(owners)
        )
    ]
    parsed = [parse_config(dict(row)) for row in touched.values() if not row.get("deleted_at")]
    anchors = runnable_anchors(
        [c for c in parsed if isinstance(c, PipelineConfig)],
        _valid_customers(customer_rows),
        PreviousAnchors(written_at, kept),
        now,
    )
    for dag_id, row in touched.items():
        since, schedule = anchors.get(dag_id, (None, None))
        if dag_id in changed:
            conn.execute("DELETE FROM configs WHERE dag_id = ?", (dag_id,))
            if not row.get("deleted_at"):
                conn.execute(
                    "INSERT INTO configs VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        _config_id_of(row),
                        str(row["customer_id"]),
                        dag_id,
                        bucket_of(dag_id),
                        _payload(row),
                        since and since.isoformat(),
                        schedule,
                    ),
                )
        else:
            conn.execute(
                "UPDATE configs SET runnable_since = ?, schedule = ? WHERE dag_id = ?",
                (since and since.isoformat(), schedule, dag_id),
            )
