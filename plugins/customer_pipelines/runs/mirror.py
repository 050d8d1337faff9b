"""The run-state mirror: each state transition of a run becomes one append-only row of
``scheduled_pipeline_runs``, keyed by a deterministic event key (so duplicates collapse in the
views). A write that fails is spooled to local disk and delivered by the next write or a drain:
a BigQuery outage never turns a pipeline's result into a failure, and nothing is lost."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from customer_pipelines.models import SkipReason
from customer_pipelines.private_files import open_private

log = logging.getLogger(__name__)

RUNS_TABLE = "scheduled_pipeline_runs"
RECORD_BACKLOG_LIMIT = 100
"""Spooled transitions a task's own write carries along: a long outage's backlog is the syncer's
to drain in batches, not one task's."""


class RunState(StrEnum):
    SCHEDULED = "SCHEDULED"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    RETRYING = "RETRYING"
    SKIPPED = "SKIPPED"
    TIMEOUT = "TIMEOUT"
    CANCELLED = "CANCELLED"


class ErrorType(StrEnum):
    """Whose failure a failed, retried, timed-out or cancelled try is (the ``error_type`` column).
    Only PIPELINE and TIMEOUT count toward the failure policy's auto-pause
    (views/080_pipeline_configs_status.sql lists the same two)."""

    PIPELINE = "PIPELINE"
    """The customer's own pipeline failed: its template, parameters, data or credentials."""
    TIMEOUT = "TIMEOUT"
    """The pipeline ran past the config's max_execution_duration_minutes."""
    PLATFORM = "PLATFORM"
    """Ours failed around the pipeline: quota ledger, snapshot, settings, a killed or lost worker."""
    MANUAL = "MANUAL"
    """A person marked the task or its run in Airflow."""


@dataclass(frozen=True)
class RunIdentity:
    """Which run, which execution of it and which try of its task a transition belongs to.

    An execution is one pass of a run: Airflow runs the same run_id again when a person clears it or
    a backfill reprocesses it (``DagRun.clear_number`` counts those clears, and try numbers carry on
    across them). Retries belong to their execution; each execution is its own unit of quota and has
    its own SCHEDULED/QUEUED/RUNNING/ending in the mirror."""

    config_id: str
    customer_id: str
    dag_id: str
    run_id: str
    task_id: str | None = None
    try_number: int | None = None
    logical_date: datetime | None = None
    scheduled_time: datetime | None = None
    run_type: str | None = None
    """Airflow's run type as its value (``scheduled``, ``manual``, ``backfill``, ...)."""
    clear_number: int = 0
    """Airflow's ``DagRun.clear_number`` when this execution started (0: never cleared)."""

    def __post_init__(self) -> None:
        # Airflow hands over DagRunType members, whose str() is "DagRunType.BACKFILL_JOB" in the
        # Task SDK: the mirror stores the value every reader filters on.
        if self.run_type is not None and type(self.run_type) is not str:
            object.__setattr__(self, "run_type", str(getattr(self.run_type, "value", self.run_type)))

    @property
    def run_key(self) -> str:
        return f"{self.dag_id}/{self.run_id}"

    @property
    def execution_key(self) -> str:
        """The execution's identity (the quota ledger's run_key). A first execution keeps the run's
        key, so reservations taken before executions had keys of their own still match its retries;
        '#' is outside Airflow's run_id alphabet, so no run's key can equal another's execution."""
        return self.run_key if not self.clear_number else f"{self.run_key}#{self.clear_number}"


def event_key(identity: RunIdentity, state: RunState, occurrence: datetime | None = None) -> str:
    """The same transition always gets the same key, whoever reports it and however often.

    The execution is part of it (a cleared run's new SCHEDULED/QUEUED are new transitions; a first
    execution's keys are what they were before executions had numbers). ``occurrence`` makes each
    occurrence of one state its own transition: a person can mark one try A, B and A again."""
    parts = [identity.dag_id, identity.run_id, identity.task_id or "", str(identity.try_number or 0), state.value]
    if identity.clear_number:
        parts.append(f"clear={identity.clear_number}")
    if occurrence is not None:
        parts.append(f"at={occurrence.isoformat()}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:40]


def run_event(
    identity: RunIdentity,
    state: RunState,
    *,
    source: str,
    event_time: datetime | None = None,
    started_at: datetime | None = None,
    ended_at: datetime | None = None,
    skip_reason: SkipReason | None = None,
    error: BaseException | None = None,
    error_type: str | None = None,
    error_message: str | None = None,
    details: Mapping[str, Any] | None = None,
    each_occurrence: bool = False,
) -> dict[str, Any]:
    """One transition as a row. ``each_occurrence``: the event is one of possibly several of the same
    state of one try (a person's mark), keyed by its own event_time rather than collapsing with the
    others."""
    now = datetime.now(UTC)
    duration = (ended_at - started_at).total_seconds() if started_at and ended_at else None
    if error is not None:
        error_type = error_type or type(error).__name__
        error_message = error_message or str(error)
    event_time = event_time or ended_at or started_at or now
    return {
        "event_key": event_key(identity, state, event_time if each_occurrence else None),
        "run_key": identity.run_key,
        "clear_number": identity.clear_number,
        "config_id": identity.config_id,
        "customer_id": identity.customer_id,
        "dag_id": identity.dag_id,
        "run_id": identity.run_id,
        "task_id": identity.task_id,
        "try_number": identity.try_number,
        "state": state.value,
        "skip_reason": skip_reason.value if skip_reason else None,
        "run_type": identity.run_type,
        "logical_date": identity.logical_date,
        "scheduled_time": identity.scheduled_time,
        "started_at": started_at,
        "ended_at": ended_at,
        "duration_seconds": duration,
        "error_type": error_type,
        "error_message": (error_message or "")[:4000] or None,
        "hostname": socket.gethostname(),
        "source": source,
        "details": dict(details) if details else None,
        "event_time": event_time,
        "recorded_at": now,
    }


def _as_json(row: Mapping[str, Any]) -> str:
    return json.dumps(row, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v), sort_keys=True)


def write_events(store: Any, rows: list[dict[str, Any]]) -> None:
    """Append transitions to the run table: streaming inserts keyed by each row's event_key."""
    store.insert_rows(RUNS_TABLE, rows, row_ids=[r["event_key"] for r in rows])


class RunStateMirror:
    """Append-only rows of one table, delivered now or spooled on local disk until BigQuery takes
    them. This class is the run table's; a subclass names another table (sla.SlaBreachSpool)."""

    table = RUNS_TABLE

    def __init__(self, store: Any, spool_dir: Path) -> None:
        self.store = store
        self.spool_dir = spool_dir

    def row_id(self, row: Mapping[str, Any]) -> str:
        """The row's deterministic key (insertId, spool file name): re-sends collapse on it."""
        return str(row["event_key"])

    def row_time(self, row: Mapping[str, Any]) -> datetime:
        return row["event_time"]

    def _stamp(self, row: dict[str, Any], now: str) -> None:
        row["recorded_at"] = now

    def record(self, row: Mapping[str, Any]) -> bool:
        """Deliver one transition (and up to RECORD_BACKLOG_LIMIT spooled ones); spool it if BigQuery
        fails. Never raises. Returns True when it reached BigQuery now."""
        pending, backlog = self._read_spool(RECORD_BACKLOG_LIMIT)
        new = json.loads(_as_json(row))
        try:
            delivered = self._deliver([*zip(pending, backlog, strict=True), (None, new)])
        except Exception as exc:  # noqa: BLE001 - the pipeline's result must not depend on the mirror
            log.warning("run-state mirror: BigQuery write failed (%s); spooled %s", exc, self.row_id(row))
            self._spool(row)
            return False
        return self.row_id(new) in delivered

    def drain(self, limit: int = 500) -> int:
        """Deliver up to ``limit`` spooled transitions; returns how many left the spool (delivered,
        or set aside as rejected)."""
        pending, backlog = self._read_spool(limit)
        if not pending:
            return 0
        self._deliver(list(zip(pending, backlog, strict=True)))
        return sum(not path.exists() for path in pending)  # rows refused for a transient reason stay

    def spool(self, row: Mapping[str, Any]) -> None:
        """Keep a transition on local disk only (for callers that must not wait on BigQuery, such as
        listeners in the scheduler); ``drain`` delivers it."""
        self._spool(row)

    def backlog(self) -> int:
        return len(self._spooled())

    def lag_seconds(self, now: datetime) -> float:
        """How long the oldest transition still spooled has waited (0: none): the mirror's lag."""
        spooled = self._spooled()
        if not spooled:
            return 0.0
        try:
            oldest = datetime.strptime(spooled[0].name.split("-", 1)[0], "%Y%m%dT%H%M%S%f").replace(tzinfo=UTC)
        except ValueError:
            return 0.0
        return max(0.0, (now - oldest).total_seconds())

    def rejected(self) -> int:
        """Transitions BigQuery refused for their content, kept under ``rejected/`` for an operator."""
        folder = self.spool_dir / "rejected"
        return len(list(folder.glob("*.json"))) if folder.exists() else 0

    def _deliver(self, items: list[tuple[Path | None, dict[str, Any]]]) -> set[str]:
        """Insert the rows (spool file or None, row), then remove the spool files of the rows
        written; returns the event keys written. A row BigQuery refuses for its content would fail
        every later delivery with it, so it is set aside (logged, kept under ``rejected/`` for
        ``mirror replay-rejected``); a row refused for a transient reason stays spooled for the next
        delivery."""
        from customer_pipelines.bigquery.store import RejectedRows

        unwritten: set[int] = set()
        try:
            self._insert([row for _, row in items])
        except RejectedRows as exc:
            for index, reasons in exc.rejected.items():
                self._set_aside(*items[index], reasons)
            for index in exc.transient:
                path, row = items[index]
                if path is None:
                    self._spool(row)
            unwritten = set(exc.rejected) | exc.transient
        written = [item for index, item in enumerate(items) if index not in unwritten]
        for path, _ in written:
            if path is not None:
                path.unlink(missing_ok=True)
        return {self.row_id(row) for _, row in written}

    def unalerted_rejected(self) -> list[str]:
        """Event keys set aside under ``rejected/`` that no alert has named yet; marks them named."""
        folder = self.spool_dir / "rejected"
        if not folder.exists():
            return []
        marker = folder / ".alerted"
        alerted = set(marker.read_text().split()) if marker.exists() else set()
        new = sorted(p.stem for p in folder.glob("*.json") if p.stem not in alerted)
        if new:
            with open_private(marker) as fh:
                fh.write("\n".join(sorted(alerted | set(new))))
        return new

    def replay_rejected(self) -> int:
        """Put the rows set aside under ``rejected/`` back into the spool (after the cause was fixed,
        e.g. a column added); the next drain delivers them. Returns how many."""
        folder = self.spool_dir / "rejected"
        replayed = 0
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            row = json.loads(path.read_text())["row"]
            self._revive_time(row)
            self._spool(row)
            path.unlink()
            replayed += 1
        return replayed

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        now = datetime.now(UTC).isoformat()
        for row in rows:
            self._stamp(row, now)
        self.store.insert_rows(self.table, rows, row_ids=[self.row_id(r) for r in rows])

    def _set_aside(self, path: Path | None, row: dict[str, Any], reasons: list[str]) -> None:
        log.error("run-state mirror: BigQuery rejected %s (%s); kept under rejected/", self.row_id(row), reasons)
        folder = self.spool_dir / "rejected"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = folder / f"{_file_safe(self.row_id(row))}.json"
        with open_private(target) as fh:  # error messages quoting tenants' data: owner-only
            fh.write(json.dumps({"row": row, "reasons": reasons}, sort_keys=True, default=str))
        if path is not None:
            path.unlink(missing_ok=True)

    def _revive_time(self, row: dict[str, Any]) -> None:
        """A row read back from JSON: its time field a datetime again (spool file names use it)."""
        row["event_time"] = datetime.fromisoformat(row["event_time"])

    def _read_spool(self, limit: int | None = None) -> tuple[list[Path], list[dict[str, Any]]]:
        """Spooled events that can be read. Another task on the host may deliver (and delete) a file
        meanwhile: skipped. A file that cannot be decoded is set aside as ``*.bad`` for an operator."""
        paths, rows = [], []
        for path in self._spooled()[:limit]:
            try:
                rows.append(json.loads(path.read_text()))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as exc:
                log.error("run-state mirror: unreadable spool file %s (%s); set aside", path, exc)
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".bad"))
                continue
            paths.append(path)
        return paths, rows

    def _spooled(self) -> list[Path]:
        if not self.spool_dir.exists():
            return []
        return sorted(self.spool_dir.glob("*.json"))

    def _spool(self, row: Mapping[str, Any]) -> None:
        self.spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        final = self.spool_dir / f"{self.row_time(row):%Y%m%dT%H%M%S%f}-{_file_safe(self.row_id(row))}.json"
        tmp = final.with_suffix(".tmp")
        with open_private(tmp) as fh:  # a tenant's run and its error message: owner-only
            fh.write(_as_json(row))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)


def _file_safe(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40] if not key.isalnum() else key
