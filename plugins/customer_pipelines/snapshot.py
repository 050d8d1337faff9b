"""The local config snapshot DAG files read instead of BigQuery.

A snapshot is one SQLite file (indexed by dag id and shard bucket, so a worker reads one row, not
the fleet). A config is identified by (customer_id, config_id), never config_id alone: two
customers may both have a config named ``daily_cost``. It is written beside its final path and
swapped in with ``os.replace``, so a reader sees the old file or the new one, never half of one;
the previous generation is kept as ``.prev`` and read when the current file is missing or
unreadable.

Each runnable config also carries the moment it became runnable (``runnable_since``), carried over
from the previous generation while it stays runnable with the same schedule: the anchor of its DAG's
first tick (see timetables.py), which must not move between parses or refreshes.

Integrity is verified once per generation, not per open: a new file is checked (SQLite's whole-file
``PRAGMA quick_check``) before it is swapped in, and a file first opened without a record (written by
an older version) is checked by its first reader; either records the file's identity in an
owner-only sidecar (``.<name>.verified``, see :class:`FileIdentity`). A later open of a file whose
identity matches the record skips the check (it costs ~45 ms at 50,000 configs, paid by every
worker's one-DAG parse otherwise); a file changed in place no longer matches, is checked again and,
if damaged, the previous generation is served.

Each generation is numbered (meta ``generation``, +1 per new file) and carries the ``watermark`` of
the incremental refresh (meta; the time of the BigQuery read it holds the changes up to) and when the
last full read was (``full_refresh_at``). A refresh that finds nothing changed writes no file; it
records in a second sidecar (``.<name>.confirmed``) that the current file was confirmed against
BigQuery at that moment, which is what the next anchors count from (see runnable_anchors)."""

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
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import cached_property
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
    parse_config_json,
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


# -- the integrity record: whole-file check once per generation -----------------------------------

VERIFIED_KEPT = 8
"""Identities the integrity record keeps: the current generation, ``.prev`` (the same inode as the
generation before) and a few more written meanwhile by other processes (the API's patches)."""
_EDGE_BYTES = 4096


@dataclass(frozen=True)
class FileIdentity:
    """Which file, in which state: inode, size and mtime (ns), and a CRC of its first and last
    4 KiB. A snapshot is never changed in place (every generation is a new file, swapped in), so a
    file whose identity matches the record is the very file that passed the check.

    Why the CRC: a write in place within the file system's timestamp granularity (a kernel tick,
    1-4 ms on Linux) can leave size and mtime as they were, as the tests' in-place damage does. The
    CRC catches what SQLite itself writes in place (its header's change counter, at offset 24,
    changes with every transaction) and any damage over the first or last page. Damage that keeps
    size, mtime and both edges (media rot under the file system, which changes no mtime) is not
    caught by any stat-based record; SQLite still refuses a malformed page when a read reaches it
    (sqlite3.DatabaseError), so such a file fails the reads that touch the damage, not silently."""

    ino: int
    size: int
    mtime_ns: int
    edges: int

    @classmethod
    def of(cls, path: Path) -> FileIdentity | None:
        """The identity of the file at ``path`` now; None when there is none."""
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                head = fh.read(_EDGE_BYTES)
                tail = b""
                if st.st_size > _EDGE_BYTES:
                    fh.seek(max(_EDGE_BYTES, st.st_size - _EDGE_BYTES))
                    tail = fh.read(_EDGE_BYTES)
        except OSError:
            return None
        return cls(st.st_ino, st.st_size, st.st_mtime_ns, zlib.crc32(tail, zlib.crc32(head)))

    def as_json(self) -> list[int]:
        return [self.ino, self.size, self.mtime_ns, self.edges]

    @classmethod
    def from_json(cls, value: Any) -> FileIdentity | None:
        try:
            ino, size, mtime_ns, edges = (int(v) for v in value)
        except (TypeError, ValueError):
            return None
        return cls(ino, size, mtime_ns, edges)


def _family(path: Path) -> Path:
    """The snapshot a file belongs to: ``configs.sqlite`` for itself and its ``.prev``."""
    return path.with_name(path.name.removesuffix(".prev"))


def _sidecar(path: Path, kind: str) -> Path:
    family = _family(path)
    return family.with_name(f".{family.name}.{kind}")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, value: Any) -> None:
    """``value`` as JSON in an owner-only file, replaced atomically (a temp name per thread: the
    API's threads and the DAG processor's workers may record at once; the last one wins)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        with open_private(tmp, exclusive=True) as fh:
            fh.write(json.dumps(value))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_verified(path: Path, identity: FileIdentity) -> bool:
    """Whether the file ``path`` (or its ``.prev``) with this identity passed the whole-file check."""
    recorded = _read_json(_sidecar(path, "verified"))
    if not isinstance(recorded, dict) or not isinstance(recorded.get("verified"), list):
        return False
    return identity in {FileIdentity.from_json(item) for item in recorded["verified"]}


def record_verified(path: Path, identity: FileIdentity) -> None:
    """Record that the file of ``path``'s family with this identity passed the whole-file check. Best
    effort: a reader that cannot write beside the snapshot only checks again next time."""
    sidecar = _sidecar(path, "verified")
    recorded = _read_json(sidecar)
    held = recorded.get("verified") if isinstance(recorded, dict) else None
    identities = [i for i in (FileIdentity.from_json(item) for item in held or []) if i is not None]
    kept = [identity, *(i for i in identities if i != identity)][:VERIFIED_KEPT]
    try:
        _write_json(sidecar, {"verified": [i.as_json() for i in kept]})
    except OSError as exc:
        # Once per process and file: a worker that may not write beside the snapshot opens it often.
        if sidecar not in _unrecorded:
            _unrecorded.add(sidecar)
            log.warning("integrity record %s not written (every open checks the file): %s", sidecar, exc)


_unrecorded: set[Path] = set()


def quick_check(conn: sqlite3.Connection) -> None:
    """SQLite's whole-file check of the database of ``conn``; raises sqlite3.DatabaseError if damaged.
    A file whose meta is readable but whose config pages are damaged must fall back to the previous
    generation, not serve zero DAGs."""
    check = conn.execute("PRAGMA quick_check").fetchone()
    if not check or check[0] != "ok":
        raise sqlite3.DatabaseError(f"integrity check failed: {check}")


def _verify_new_file(tmp: Path, family: Path) -> None:
    """Check a complete, closed new file before it is swapped in, and record it as verified."""
    conn = sqlite3.connect(f"file:{tmp}?mode=ro", uri=True)
    try:
        quick_check(conn)
    finally:
        conn.close()
    identity = FileIdentity.of(tmp)  # the rename keeps inode, size, mtime and content
    if identity is not None:
        record_verified(family, identity)


# -- when the current generation was last confirmed against BigQuery -----------------------------


@dataclass(frozen=True)
class Confirmation:
    """What the ``.confirmed`` sidecar says of one file: when it was last found to match BigQuery
    (a refresh that changed nothing writes no file, only this), the watermark that read held the
    changes up to, and when the last full read was."""

    file: FileIdentity
    confirmed_at: datetime
    watermark: datetime | None
    full_refresh_at: datetime | None


def read_confirmation(snapshot: Snapshot) -> Confirmation | None:
    """The confirmation of the file ``snapshot`` has open; None when the sidecar names another file
    (a newer generation written by a patch, or none)."""
    recorded = _read_json(_sidecar(snapshot.path, "confirmed"))
    if not isinstance(recorded, dict):
        return None
    identity = FileIdentity.from_json(recorded.get("file"))
    if identity is None or identity != FileIdentity.of(snapshot.path):
        return None
    try:
        return Confirmation(
            identity,
            datetime.fromisoformat(recorded["confirmed_at"]),
            _time_or_none(recorded.get("watermark")),
            _time_or_none(recorded.get("full_refresh_at")),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _write_confirmation(path: Path, identity: FileIdentity, confirmed_at: datetime, meta: Mapping[str, str]) -> None:
    try:
        _write_json(
            _sidecar(path, "confirmed"),
            {
                "file": identity.as_json(),
                "generation": meta.get("generation"),
                "confirmed_at": confirmed_at.isoformat(),
                "watermark": meta.get("watermark"),
                "full_refresh_at": meta.get("full_refresh_at"),
            },
        )
    except OSError as exc:
        log.warning("snapshot confirmation not recorded: %s", exc)


def _time_or_none(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if value else None
    except (TypeError, ValueError):
        return None


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
        return _previous_of(snapshot)


def _previous_of(snapshot: Snapshot) -> PreviousAnchors:
    """The anchors of ``snapshot``, and the last moment its state was confirmed against BigQuery:
    when it was written, or later when a refresh found nothing changed (its ``.confirmed`` sidecar)."""
    return PreviousAnchors(_confirmed_at(snapshot, read_confirmation(snapshot)), snapshot.anchors())


def _confirmed_at(snapshot: Snapshot, confirmation: Confirmation | None) -> datetime:
    written_at = _utc(datetime.fromisoformat(snapshot.meta["written_at"]))
    return max(written_at, _utc(confirmation.confirmed_at)) if confirmation else written_at


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
    meta: Mapping[str, str] | None = None,
) -> Path:
    """Write a complete snapshot and swap it in atomically; returns the path. ``anchors`` are the
    caller's if it computed them already (refresh_snapshot, for its guard), else computed here
    against the generation being replaced. ``meta``: more meta keys (refresh_snapshot's generation,
    watermark and full_refresh_at); the generation is otherwise the last good one's + 1."""
    now = now or datetime.now(UTC)
    if anchors is None:
        parsed = [parse_config(dict(row)) for row in configs]
        anchors = runnable_anchors(
            [c for c in parsed if isinstance(c, PipelineConfig)],
            _valid_customers(customers),
            previous_anchors(path),
            now,
        )
    rows = _snapshot_rows(customers, configs, anchors)
    meta = {
        **({} if meta and "generation" in meta else {"generation": str(_last_good_generation(path) + 1)}),
        **(meta or {}),
        "schema_version": str(SCHEMA_VERSION),
        "written_at": now.isoformat(),
        "source": source,
        "configs": str(len(rows.configs)),
        "customers": str(len(rows.customers)),
    }
    return _write_file(path, rows, meta)


def _last_good_generation(path: Path) -> int:
    try:
        with Snapshot.open_last_good(path) as snapshot:
            return snapshot.generation
    except SnapshotError:
        return 0


ConfigTuple = tuple[str, str | None, str | None, int, str, str | None, str | None]
"""A row of the configs table: config_id, customer_id, dag_id, bucket, payload, runnable_since,
schedule."""


@dataclass(frozen=True)
class _Rows:
    """The rows of a complete snapshot's tables (but meta)."""

    customers: list[tuple[str, str]]
    configs: list[ConfigTuple]
    duplicates: list[tuple[str, str | None, str]]


def _customer_payload(customer: Mapping[str, Any]) -> str:
    return json.dumps(dict(customer), default=_json_default)


def _snapshot_rows(
    customers: Sequence[Mapping[str, Any]],
    configs: Sequence[Mapping[str, Any]],
    anchors: Mapping[str, tuple[datetime, str]],
) -> _Rows:
    rows: list[ConfigTuple] = []
    duplicates: list[tuple[str, str | None, str]] = []
    for (customer_id, _), clashing in _group_by_identity(configs).items():
        kept, rejected = _oldest_of(clashing)
        duplicates += [(_config_id_of(row), customer_id, _payload(row)) for row in rejected]
        if kept is not None:
            rows.append(_config_tuple(kept, customer_id, anchors))
    return _Rows([(str(c["customer_id"]), _customer_payload(c)) for c in customers], rows, duplicates)


def _config_tuple(
    row: Mapping[str, Any], customer_id: str | None, anchors: Mapping[str, tuple[datetime, str]]
) -> ConfigTuple:
    config_id = _config_id_of(row)
    dag_id = dag_id_for(customer_id, config_id) if customer_id else None
    since, schedule = anchors.get(dag_id or "", (None, None))
    bucket = bucket_of(dag_id or config_id)
    return (config_id, customer_id, dag_id, bucket, _payload(row), since and since.isoformat(), schedule)


def _new_tmp(path: Path) -> Path:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    return tmp


def _write_file(path: Path, rows: _Rows, meta: Mapping[str, str]) -> Path:
    """A new file of these rows, checked, recorded as verified and swapped in at ``path``."""
    tmp = _new_tmp(path)
    try:
        # Every tenant's configs: created owner-only (SQLite gives its journal the database's mode).
        open_private(tmp, exclusive=True).close()
        conn = sqlite3.connect(tmp)
        try:
            conn.executescript(_DDL)
            conn.executemany("INSERT INTO customers VALUES (?, ?)", rows.customers)
            conn.executemany("INSERT INTO configs VALUES (?, ?, ?, ?, ?, ?, ?)", rows.configs)
            conn.executemany("INSERT INTO duplicate_configs VALUES (?, ?, ?)", rows.duplicates)
            conn.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
            conn.commit()
        finally:
            conn.close()
        _verify_new_file(tmp, path)
        return _swap_in(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def install_file(tmp: Path, path: Path) -> Path:
    """Make a complete snapshot file written elsewhere (fetched from the snapshot store) the
    snapshot at ``path``, as a refresh would: checked, recorded as verified, swapped in."""
    _verify_new_file(tmp, path)
    return _swap_in(tmp, path)


def new_tmp_beside(path: Path) -> Path:
    """A temporary file name beside ``path`` (same file system, so the swap is one rename)."""
    return _new_tmp(path)


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
    if len(clashing) <= 1:
        return (clashing[0] if clashing else None), []
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
    payload: str
    """The config row as JSON text (decoded only when asked: ``row``, ``parse``)."""
    runnable_since: datetime | None = None
    """When the config became runnable (its DAG's first-tick anchor); None: it must not run."""

    @classmethod
    def of(cls, config_id: str, dag_id: str | None, bucket: int, payload: str, since: str | None) -> ConfigRow:
        return cls(config_id, dag_id, bucket, payload, datetime.fromisoformat(since) if since else None)

    @cached_property
    def row(self) -> dict[str, Any]:
        """The row as a dict."""
        return json.loads(self.payload)

    def parse(self) -> PipelineConfig | ConfigError:
        """The validated config, or why it is not one (``models.parse_config_json``)."""
        return parse_config_json(self.payload)


_CONFIG_COLUMNS = "config_id, dag_id, bucket, payload, runnable_since"


class Snapshot:
    """A read-only view of one snapshot file."""

    def __init__(self, path: Path, *, checked: bool = False) -> None:
        """Open ``path`` and verify its integrity once per generation: the whole-file check runs
        unless this very file (its :class:`FileIdentity`) is recorded as verified, and a passing
        file is recorded. ``checked``: the caller knows this file passed already (the API's reader,
        opening a generation another of its threads opened); neither record nor check is read."""
        self.path = path
        before = None if checked else FileIdentity.of(path)
        # immutable=1: the file is never changed in place (only replaced), so no locking is needed.
        self._conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            self.meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
            if not checked:
                # The file the connection holds is the one identified only if the path named the
                # same file before the open and after it (a swap in between: check, record nothing).
                stable = before is not None and before == FileIdentity.of(path)
                if not (stable and is_verified(path, before)):
                    quick_check(self._conn)
                    if stable:
                        record_verified(path, before)
            if int(self.meta.get("schema_version", 0)) != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"snapshot schema {self.meta.get('schema_version')} != {SCHEMA_VERSION}")
        except BaseException:
            self._conn.close()
            raise

    @property
    def generation(self) -> int:
        """The generation number (0: a file written before generations were counted)."""
        try:
            return int(self.meta.get("generation", 0))
        except ValueError:
            return 0

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

    def customers_of_shard(self, shard: int, shards: int) -> dict[str, Customer]:
        """The valid customers of one shard's configs, in one query (a query per customer cost a
        shard's parse more than validating its configs)."""
        rows = self._conn.execute(
            "SELECT customer_id, payload FROM customers"
            " WHERE customer_id IN (SELECT customer_id FROM configs WHERE bucket % ? = ?)",
            (shards, shard),
        )
        return {c: customer for c, payload in rows if (customer := _customer_or_none(c, payload)) is not None}

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
    """Invalid configs among the rows read: every config on a full refresh, the changed ones on an
    incremental one."""
    changed_dag_ids: frozenset[str] | None = None
    """The DAG ids whose DAG may differ after this refresh: a config added, removed, or whose payload
    or first-tick anchor changed, and every config of a customer whose row changed (added, removed
    or edited). Empty: nothing any DAG is built from changed. None: unknown, treat every DAG as
    changed (no readable previous generation, or it was the ``.prev`` file)."""
    full: bool = True
    """Whether every config was read (a full refresh), or only the changes since the watermark."""
    written: bool = True
    """Whether a new generation was swapped in (a refresh that changed nothing writes no file)."""
    generation: int = 0
    """The generation at ``path`` after the refresh."""


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


INCREMENTAL_OVERLAP = timedelta(minutes=5)
"""An incremental refresh reads the configs changed since its watermark minus this: BigQuery's
streaming inserts become visible to queries late, and a writer's clock may lag the syncer's. A row
read again is compared with the one held and changes nothing."""


def refresh_snapshot(
    store: Any,
    path: Path,
    *,
    guard: RefreshGuard | None = None,
    force: bool = False,
    full_every: timedelta | None = None,
    overlap: timedelta = INCREMENTAL_OVERLAP,
    now: datetime | None = None,
) -> RefreshResult:
    """Bring the snapshot at ``path`` up to date with the store; a new generation is swapped in only
    if something changed. If BigQuery fails, or the guard refuses the new generation (unless
    ``force``), the exception propagates and the last good snapshot stays in place untouched. The
    caller holds ``refresh_lock``.

    A full refresh reads every config and customer (``store.fetch_configs``/``fetch_customers``).
    With ``full_every`` set (the syncer: CP_FULL_REFRESH_MINUTES) a refresh is incremental: it reads
    the customers whole (their subscription in force changes with time, not only with rows) and the
    latest version of each config with a version written after the watermark minus ``overlap``
    (``store.fetch_config_changes``, soft-deleted ones included), and applies them to a copy of the
    last good generation. A full refresh still runs when there is no readable generation (or only
    ``.prev``), the generation has no watermark (written by an older version, or by
    ``write_snapshot``), with ``force``, and once ``full_every`` has passed since the last full one:
    it converges on what an incremental read cannot see (rows removed, or edited by hand with an old
    ``updated_at``). ``full_every=None``: every refresh is full. ``now``: the moment taken as now for
    anchors and confirmations (tests); the watermark is always the clock's time before the reads."""
    read_at = datetime.now(UTC)
    now = now or read_at
    try:
        last: Snapshot | None = Snapshot.open_last_good(path)
    except SnapshotError:
        last = None
    try:
        since = _incremental_since(path, last, force=force, full_every=full_every, overlap=overlap, now=now)
        if last is None or since is None:
            return _full_refresh(store, path, last, guard=guard, force=force, now=now, read_at=read_at)
        return _incremental_refresh(store, path, last, guard=guard, since=since, now=now, read_at=read_at)
    finally:
        if last is not None:
            last.close()


def _source_of(store: Any) -> str:
    return f"bigquery:{store.settings.bq_project}.{store.settings.bq_dataset}"


def _refresh_marks(last: Snapshot) -> tuple[datetime | None, datetime | None]:
    """(watermark, last full refresh) of the last good generation: its confirmation's if the
    sidecar names this file (a no-op refresh writes only that), else its meta's."""
    confirmation = read_confirmation(last)
    watermark = confirmation.watermark if confirmation else None
    full_at = confirmation.full_refresh_at if confirmation else None
    return (
        watermark or _time_or_none(last.meta.get("watermark")),
        full_at or _time_or_none(last.meta.get("full_refresh_at")),
    )


def _incremental_since(
    path: Path, last: Snapshot | None, *, force: bool, full_every: timedelta | None, overlap: timedelta, now: datetime
) -> datetime | None:
    """Where an incremental read starts; None: this refresh must be a full one."""
    if force or full_every is None or last is None or last.path != path:
        return None
    watermark, full_at = _refresh_marks(last)
    if watermark is None or full_at is None or now - _utc(full_at) >= full_every:
        return None
    return _utc(watermark) - overlap


def _same_json(old: str | None, new: str | None) -> bool:
    if old == new:
        return True
    if old is None or new is None:
        return False
    return json.loads(old) == json.loads(new)


def _invalid_of(parsed: Sequence[Any]) -> list[ConfigError]:
    invalid = [r for r in parsed if isinstance(r, ConfigError)]
    for error in invalid:
        log.warning("invalid pipeline config: %s", error)
    return invalid


def _confirm(path: Path, last: Snapshot, now: datetime, meta: Mapping[str, str]) -> None:
    identity = FileIdentity.of(last.path)
    if identity is not None:
        _write_confirmation(path, identity, now, meta)


def _full_refresh(
    store: Any,
    path: Path,
    last: Snapshot | None,
    *,
    guard: RefreshGuard | None,
    force: bool,
    now: datetime,
    read_at: datetime,
) -> RefreshResult:
    customers = store.fetch_customers()
    configs = store.fetch_configs()
    parsed = [parse_config(row) for row in configs]
    previous = _previous_of(last) if last is not None else None
    valid = [c for c in parsed if isinstance(c, PipelineConfig)]
    anchors = runnable_anchors(valid, _valid_customers(customers), previous, now)
    if previous is not None and not force:
        (guard or RefreshGuard()).check(set(previous.anchors), set(anchors), empty_result=not configs or not customers)
    invalid = _invalid_of(parsed)
    rows = _snapshot_rows(customers, configs, anchors)
    source = _source_of(store)
    marks = {"watermark": read_at.isoformat(), "full_refresh_at": now.isoformat(), "refresh": "full"}
    counts = {"configs": len(configs), "customers": len(customers), "invalid": invalid}
    changed: frozenset[str] | None = None
    if last is not None:
        differs, changed_ids = _full_diff(last, rows)
        current = last.path == path
        changed = changed_ids if current else None
        upgraded = all(key in last.meta for key in ("generation", "watermark", "full_refresh_at"))
        if not differs and current and upgraded and last.meta.get("source") == source:
            _confirm(path, last, now, {**marks, "generation": str(last.generation)})
            return RefreshResult(path, **counts, changed_dag_ids=frozenset(), written=False, generation=last.generation)
    generation = (last.generation if last is not None else 0) + 1
    meta = {**marks, "generation": str(generation)}
    write_snapshot(path, customers, configs, source=source, now=now, anchors=anchors, meta=meta)
    identity = FileIdentity.of(path)
    if identity is not None:
        _write_confirmation(path, identity, now, meta)
    return RefreshResult(path, **counts, changed_dag_ids=changed, generation=generation)


def _full_diff(last: Snapshot, rows: _Rows) -> tuple[bool, frozenset[str]]:
    """Whether ``rows`` differ from ``last`` at all, and the DAG ids that may differ (see
    RefreshResult.changed_dag_ids)."""
    old_customers = dict(last._conn.execute("SELECT customer_id, payload FROM customers"))
    new_customers = dict(rows.customers)
    changed_customers = {
        c
        for c in old_customers.keys() | new_customers.keys()
        if not _same_json(old_customers.get(c), new_customers.get(c))
    }
    old_configs: dict[str, ConfigTuple] = {}
    old_loose: list[ConfigTuple] = []  # no customer, so no DAG: only whether they changed counts
    for found in last._conn.execute(
        "SELECT config_id, customer_id, dag_id, bucket, payload, runnable_since, schedule FROM configs"
    ):
        if found[2] is None:
            old_loose.append(found)
        else:
            old_configs[found[2]] = found
    new_configs = {row[2]: row for row in rows.configs if row[2] is not None}
    new_loose = [row for row in rows.configs if row[2] is None]
    changed = {
        dag_id
        for dag_id in old_configs.keys() | new_configs.keys()
        if not _same_config(old_configs.get(dag_id), new_configs.get(dag_id))
    }
    changed |= {
        row[2]
        for row in (*old_configs.values(), *new_configs.values())
        if row[1] in changed_customers and row[2] is not None
    }
    old_duplicates = sorted(last._conn.execute("SELECT config_id, customer_id, payload FROM duplicate_configs"))
    differs = bool(
        changed
        or changed_customers
        or sorted(old_loose, key=repr) != sorted(new_loose, key=repr)
        or old_duplicates != sorted(rows.duplicates, key=repr)
    )
    return differs, frozenset(changed)


def _same_config(old: ConfigTuple | None, new: ConfigTuple | None) -> bool:
    if old is None or new is None:
        return old is new
    return old[:4] == new[:4] and old[5:] == new[5:] and _same_json(old[4], new[4])


def _version_key(row: Mapping[str, Any]) -> tuple[int, datetime] | None:
    try:
        return int(row["version"]), _utc(datetime.fromisoformat(str(row["updated_at"])))
    except (KeyError, TypeError, ValueError):
        return None


def _older(incoming: Mapping[str, Any], held: Mapping[str, Any] | None) -> bool:
    """Whether ``incoming`` is an older version than the row held: BigQuery has not yet shown a
    query the version the API patched in (its streaming buffer); the held one is kept."""
    if held is None:
        return False
    new, old = _version_key(incoming), _version_key(held)
    return new is not None and old is not None and new < old


def _incremental_refresh(
    store: Any,
    path: Path,
    last: Snapshot,
    *,
    guard: RefreshGuard | None,
    since: datetime,
    now: datetime,
    read_at: datetime,
) -> RefreshResult:
    customers = store.fetch_customers()
    changes = store.fetch_config_changes(since)
    source = _source_of(store)
    confirmation = read_confirmation(last)
    confirmed_at = _confirmed_at(last, confirmation)
    _, full_at = _refresh_marks(last)
    conn = last._conn

    # Customers: read whole, compared with the snapshot's.
    old_customers = dict(conn.execute("SELECT customer_id, payload FROM customers"))
    new_customers = {str(c["customer_id"]): _customer_payload(c) for c in customers}
    changed_customers = {
        c
        for c in old_customers.keys() | new_customers.keys()
        if not _same_json(old_customers.get(c), new_customers.get(c))
    }

    # Configs: the latest version of each one changed since the watermark, as JSON like the
    # snapshot holds it; ``deleted_at`` marks a removal and is not part of the payload.
    incoming: dict[tuple[str, str], list[tuple[dict[str, Any], bool]]] = {}
    parsed_changes = []
    for change in changes:
        row = json.loads(_payload(change))
        deleted = row.pop("deleted_at", None) is not None
        if not deleted:
            parsed_changes.append(parse_config(dict(row)))
        key = (str(row.get("customer_id")), config_id_key(_config_id_of(row)))
        incoming.setdefault(key, []).append((row, deleted))
    invalid = _invalid_of(parsed_changes)

    duplicates_of: dict[tuple[str | None, str], dict[str, dict[str, Any]]] = {}
    for config_id, customer_id, payload in conn.execute(
        "SELECT config_id, customer_id, payload FROM duplicate_configs"
    ):
        duplicates_of.setdefault((customer_id, config_id_key(config_id)), {}).setdefault(config_id, json.loads(payload))
    old_rows_of: dict[str, list[ConfigTuple]] = {}  # by customer, of the customers with changes
    for customer_id in {key[0] for key in incoming} | changed_customers:
        old_rows_of[customer_id] = list(
            conn.execute(
                "SELECT config_id, customer_id, dag_id, bucket, payload, runnable_since, schedule"
                " FROM configs WHERE customer_id = ?",
                (customer_id,),
            )
        )

    # Each identity (customer, config id ignoring case) with a change: its rows as the full path
    # would group them, the oldest keeping the DAG.
    replaced: dict[tuple[str, str], tuple[list[ConfigTuple], dict[str, dict[str, Any]], Any, list[Any]]] = {}
    for key, rows in incoming.items():
        customer_id, id_key = key
        old_kept = [row for row in old_rows_of[customer_id] if config_id_key(row[0]) == id_key]
        old_members = {row[0]: json.loads(row[4]) for row in old_kept}
        old_duplicates = duplicates_of.get(key, {})
        for config_id, row in old_duplicates.items():
            old_members.setdefault(config_id, row)
        members = dict(old_members)
        for row, deleted in rows:
            config_id = _config_id_of(row)
            if _older(row, members.get(config_id)):
                continue
            if deleted:
                members.pop(config_id, None)
            else:
                members[config_id] = row
        if members == old_members:
            continue
        kept, rejected = _oldest_of(list(members.values()))
        replaced[key] = (old_kept, old_duplicates, kept, rejected)

    if not replaced and not changed_customers:
        marks = {"generation": str(last.generation), "watermark": read_at.isoformat()}
        _confirm(path, last, now, {**marks, "full_refresh_at": full_at.isoformat() if full_at else ""})
        return RefreshResult(
            path,
            int(last.meta.get("configs", 0)),
            len(customers),
            invalid,
            changed_dag_ids=frozenset(),
            full=False,
            written=False,
            generation=last.generation,
        )

    touched: set[str] = set()
    for customer_id in changed_customers:
        touched |= {row[2] for row in old_rows_of.get(customer_id, []) if row[2] is not None}
    for old_kept, _, kept, _ in replaced.values():
        touched |= {row[2] for row in old_kept if row[2] is not None}
        if kept is not None:
            touched.add(dag_id_for(str(kept["customer_id"]), _config_id_of(kept)))
    old_state = _config_states(conn, touched)
    running_before = {
        dag_id for (dag_id,) in conn.execute("SELECT dag_id FROM configs WHERE runnable_since IS NOT NULL")
    }

    tmp = _new_tmp(path)
    try:
        with open(last.path, "rb") as src, open_private(tmp, "wb", exclusive=True) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        out = sqlite3.connect(tmp)
        try:
            for customer_id in changed_customers:
                if customer_id in new_customers:
                    out.execute(
                        "INSERT OR REPLACE INTO customers VALUES (?, ?)", (customer_id, new_customers[customer_id])
                    )
                else:
                    out.execute("DELETE FROM customers WHERE customer_id = ?", (customer_id,))
            for (customer_id, _), (old_kept, old_duplicates, kept, rejected) in replaced.items():
                for row in old_kept:
                    out.execute("DELETE FROM configs WHERE customer_id = ? AND config_id = ?", (customer_id, row[0]))
                for config_id in old_duplicates:
                    out.execute(
                        "DELETE FROM duplicate_configs WHERE customer_id = ? AND config_id = ?",
                        (customer_id, config_id),
                    )
                out.executemany(
                    "INSERT INTO duplicate_configs VALUES (?, ?, ?)",
                    [(_config_id_of(row), customer_id, _payload(row)) for row in rejected],
                )
                if kept is not None:
                    out.execute(
                        "INSERT INTO configs VALUES (?, ?, ?, ?, ?, ?, ?)", _config_tuple(kept, customer_id, {})
                    )
            # The first-tick anchors of every touched DAG, as a full refresh would compute them.
            present = _config_states(out, touched)
            owners = {state[1] for state in present.values() if state[1] is not None}
            valid_customers = _valid_customers([json.loads(new_customers[c]) for c in owners if c in new_customers])
            parsed = [parse_config(json.loads(state[4])) for state in present.values()]
            kept_anchors = {
                dag_id: (datetime.fromisoformat(state[5]), state[6])
                for dag_id, state in old_state.items()
                if state[5] is not None
            }
            anchors = runnable_anchors(
                [c for c in parsed if isinstance(c, PipelineConfig)],
                valid_customers,
                PreviousAnchors(confirmed_at, kept_anchors),
                now,
            )
            for dag_id in present:
                since_, schedule = anchors.get(dag_id, (None, None))
                out.execute(
                    "UPDATE configs SET runnable_since = ?, schedule = ? WHERE dag_id = ?",
                    (since_ and since_.isoformat(), schedule, dag_id),
                )
            new_state = _config_states(out, touched)
            changed = {d for d in touched if not _same_config(old_state.get(d), new_state.get(d))}
            # A changed customer changes each of its DAGs (its doc page, paused flag, first tick):
            # one pass over the touched DAGs, not one per changed customer (10,000 customers changed
            # at once over 50,000 configs were 500 million steps).
            touched_by_customer: dict[str, set[str]] = {}
            for dag_id in touched:
                state = old_state.get(dag_id) or new_state.get(dag_id)
                if state:
                    touched_by_customer.setdefault(state[1], set()).add(dag_id)
            for customer_id in changed_customers:
                changed |= touched_by_customer.get(customer_id, set())
            running_after = (running_before - touched) | {d for d, state in new_state.items() if state[5] is not None}
            (guard or RefreshGuard()).check(running_before, running_after, empty_result=not customers)
            generation = last.generation + 1
            meta = {
                "generation": str(generation),
                "written_at": now.isoformat(),
                "watermark": read_at.isoformat(),
                "full_refresh_at": (full_at or now).isoformat(),
                "refresh": "incremental",
                "source": source,
            }
            out.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", list(meta.items()))
            out.execute("DELETE FROM meta WHERE key = 'patched_by'")
            for table in ("configs", "customers"):
                out.execute(f"INSERT OR REPLACE INTO meta VALUES (?, (SELECT COUNT(*) FROM {table}))", (table,))
            configs_count = out.execute("SELECT COUNT(*) FROM configs").fetchone()[0]
            out.commit()
        finally:
            out.close()
        _verify_new_file(tmp, path)
        _swap_in(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    identity = FileIdentity.of(path)
    if identity is not None:
        _write_confirmation(path, identity, now, meta)
    return RefreshResult(
        path,
        configs_count,
        len(customers),
        invalid,
        changed_dag_ids=frozenset(changed),
        full=False,
        generation=generation,
    )


def _config_states(conn: sqlite3.Connection, dag_ids: set[str]) -> dict[str, ConfigTuple]:
    """dag_id -> its configs row, of these DAG ids (an indexed read per hundred ids)."""
    ids = sorted(dag_ids)
    found: dict[str, ConfigTuple] = {}
    for start in range(0, len(ids), 500):
        part = ids[start : start + 500]
        for row in conn.execute(
            "SELECT config_id, customer_id, dag_id, bucket, payload, runnable_since, schedule FROM configs"
            f" WHERE dag_id IN ({','.join('?' * len(part))})",
            part,
        ):
            found[row[2]] = row
    return found


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
        written_at = _confirmed_at(snapshot, read_confirmation(snapshot))
        generation = snapshot.generation + 1
    tmp = _new_tmp(path)
    try:
        with open(source_file, "rb") as src, open_private(tmp, "wb", exclusive=True) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        conn = sqlite3.connect(tmp)
        try:
            _apply_patch(conn, configs, customers, written_at, now)
            conn.execute("UPDATE meta SET value = ? WHERE key = 'written_at'", (now.isoformat(),))
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('generation', ?)", (str(generation),))
            # ``source`` stays where the rows came from (a BigQuery dataset); the patch is recorded apart.
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('patched_by', ?)", (source,))
            for table in ("configs", "customers"):  # meta counts each table's rows under its name
                conn.execute(f"UPDATE meta SET value = (SELECT COUNT(*) FROM {table}) WHERE key = ?", (table,))
            conn.commit()
        finally:
            conn.close()
        _verify_new_file(tmp, path)
        return _swap_in(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
