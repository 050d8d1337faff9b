"""The local config snapshot DAG files read instead of BigQuery.

A snapshot is one SQLite file (indexed by config id, dag id and shard bucket, so a worker reads one
row, not the fleet). It is written beside its final path and swapped in with ``os.replace``, so a
reader sees the old file or the new one, never half of one; the previous generation is kept as
``.prev`` and read when the current file is missing or unreadable."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from customer_pipelines.models import Customer, dag_id_for

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2
BUCKETS = 4096
"""Configs hash into this many buckets; a shard file takes the buckets ``b % shards == i``, so a
config's shard depends on its own id only."""

_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE customers (customer_id TEXT PRIMARY KEY, payload TEXT NOT NULL);
CREATE TABLE configs (
  config_id TEXT PRIMARY KEY,
  customer_id TEXT,
  dag_id TEXT,
  bucket INTEGER NOT NULL,
  payload TEXT NOT NULL
);
CREATE TABLE duplicate_configs (config_id TEXT NOT NULL, payload TEXT NOT NULL);
CREATE INDEX configs_by_dag_id ON configs (dag_id);
CREATE INDEX configs_by_bucket ON configs (bucket);
"""


class SnapshotError(RuntimeError):
    """No readable snapshot (neither the current file nor the previous generation)."""


def bucket_of(config_id: str) -> int:
    return zlib.crc32(config_id.encode()) % BUCKETS


def _json_default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_snapshot(
    path: Path,
    customers: Sequence[Mapping[str, Any]],
    configs: Sequence[Mapping[str, Any]],
    *,
    source: str,
) -> Path:
    """Write a complete snapshot and swap it in atomically; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    conn = sqlite3.connect(tmp)
    try:
        conn.executescript(_DDL)
        conn.executemany(
            "INSERT INTO customers VALUES (?, ?)",
            [(str(c["customer_id"]), json.dumps(dict(c), default=_json_default)) for c in customers],
        )
        rows, seen, duplicates = [], set(), []
        for row in configs:
            config_id = str(row.get("config_id", ""))
            customer_id = row.get("customer_id")
            dag_id = dag_id_for(str(customer_id), config_id) if customer_id else None
            payload = json.dumps(dict(row), default=_json_default, sort_keys=True)
            if config_id in seen:  # BigQuery enforces no uniqueness; which row wins would be arbitrary
                duplicates.append((config_id, payload))
                continue
            seen.add(config_id)
            rows.append((config_id, customer_id, dag_id, bucket_of(config_id), payload))
        duplicated = {config_id for config_id, _ in duplicates}
        conn.executemany("INSERT INTO configs VALUES (?, ?, ?, ?, ?)", [r for r in rows if r[0] not in duplicated])
        conn.executemany(
            "INSERT INTO duplicate_configs VALUES (?, ?)",
            duplicates + [(r[0], r[4]) for r in rows if r[0] in duplicated],
        )
        meta = {
            "schema_version": str(SCHEMA_VERSION),
            "written_at": datetime.now(UTC).isoformat(),
            "source": source,
            "configs": str(len(rows)),
            "customers": str(len(customers)),
        }
        conn.executemany("INSERT INTO meta VALUES (?, ?)", list(meta.items()))
        conn.commit()
    finally:
        conn.close()
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    previous = path.with_name(path.name + ".prev")
    if path.exists():
        previous.unlink(missing_ok=True)
        os.link(path, previous)
    os.replace(tmp, path)
    return path


@dataclass(frozen=True)
class ConfigRow:
    config_id: str
    dag_id: str | None
    bucket: int
    row: dict[str, Any]


class Snapshot:
    """A read-only view of one snapshot file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # immutable=1: the file is never changed in place (only replaced), so no locking is needed.
        self._conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        # A whole-file check: a file whose meta is readable but whose config pages are damaged must
        # fall back to the previous generation, not serve zero DAGs.
        check = self._conn.execute("PRAGMA quick_check").fetchone()
        if not check or check[0] != "ok":
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
            cursor = self._conn.execute("SELECT config_id, dag_id, bucket, payload FROM configs ORDER BY config_id")
        else:
            cursor = self._conn.execute(
                "SELECT config_id, dag_id, bucket, payload FROM configs WHERE bucket % ? = ? ORDER BY config_id",
                (shards, shard),
            )
        for config_id, dag_id, bucket, payload in cursor:
            yield ConfigRow(config_id, dag_id, bucket, json.loads(payload))

    def duplicate_config_ids(self) -> list[str]:
        """Config ids that more than one row claims: none of those rows becomes a DAG."""
        return [r[0] for r in self._conn.execute("SELECT DISTINCT config_id FROM duplicate_configs ORDER BY 1")]

    def config_by_dag_id(self, dag_id: str) -> ConfigRow | None:
        found = self._conn.execute(
            "SELECT config_id, dag_id, bucket, payload FROM configs WHERE dag_id = ?", (dag_id,)
        ).fetchone()
        return ConfigRow(found[0], found[1], found[2], json.loads(found[3])) if found else None


def _customer_or_none(customer_id: str, payload: str) -> Customer | None:
    try:
        return Customer.model_validate_json(payload)
    except ValueError as exc:
        log.error("customer %r in the snapshot is invalid: %s", customer_id, exc)
        return None


@dataclass(frozen=True)
class RefreshResult:
    path: Path
    configs: int
    customers: int
    invalid: list[Any]


def refresh_snapshot(store: Any, path: Path) -> RefreshResult:
    """Read configs and customers from the store and swap in a new snapshot. If BigQuery fails the
    exception propagates and the last good snapshot stays in place untouched."""
    from customer_pipelines.models import ConfigError, parse_config

    customers = store.fetch_customers()
    configs = store.fetch_configs()
    write_snapshot(path, customers, configs, source=f"bigquery:{store.settings.bq_project}.{store.settings.bq_dataset}")
    invalid = [r for r in map(parse_config, configs) if isinstance(r, ConfigError)]
    for error in invalid:
        log.warning("invalid pipeline config: %s", error)
    return RefreshResult(path=path, configs=len(configs), customers=len(customers), invalid=invalid)
