"""Daily and monthly run quotas that are never exceeded, however many runs start at once.

The check-and-record is serialised per customer by a PostgreSQL advisory lock held for one short
transaction: count the customer's reservations of the UTC day and month, refuse if either limit is
reached, else insert this execution's reservation. Two workers starting the customer's last unit in
the same millisecond queue on the lock; the second one sees the first's row. An execution's retries
find its reservation (keyed by ``RunIdentity.execution_key``) and are not counted again.

What counts: one execution of a run that started its pipeline; a run cleared or reprocessed by a
backfill is a new execution (Airflow's ``DagRun.clear_number``). Which calendar: UTC; a scheduled
run's first execution counts on its tick's day (its logical date: a config's start window or a slow
queue can start a 23:59 tick's run after midnight, and it is still that day's run); any other
execution (manual, backfill, a clear) on the day it asks.

Every wait for the ledger is bounded (``CP_QUOTA_DB_*_TIMEOUT_SECONDS``) and interruptible by the
task's execution_timeout: a ledger that is down or silent fails the try with ``QuotaLedgerError``
within seconds (a platform failure, retried) instead of holding its pool slot forever."""

from __future__ import annotations

import dataclasses
import logging
import select
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from customer_pipelines.bigquery.sql import raw_sql
from customer_pipelines.models import Customer
from customer_pipelines.settings import Settings

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class QuotaDecision:
    allowed: bool
    reason: str | None
    used_today: int
    used_this_month: int
    daily_limit: int | None
    monthly_limit: int | None
    reused: bool = False
    """True when the run already held a reservation (a retry)."""


def _limit_reached(customer: Customer, used_today: int, used_month: int) -> str | None:
    if customer.daily_run_limit is not None and used_today >= customer.daily_run_limit:
        return "DAILY_LIMIT"
    if customer.monthly_run_limit is not None and used_month >= customer.monthly_run_limit:
        return "MONTHLY_LIMIT"
    return None


GATE_POLL_MAX_SECONDS = 0.2


class QuotaLedgerError(RuntimeError):
    """The quota ledger's PostgreSQL could not be reached, did not answer within its bound, or
    refused a statement; the message says which server and which setting bounds the wait. A
    platform failure: the try is retried and it never counts toward a customer's auto-pause."""


def _describe(url: str) -> str:
    """host:port/database of the URL, without user or password."""
    try:
        dsn = psycopg2.extensions.parse_dsn(url)
    except psycopg2.Error:
        return "(unparseable CP_QUOTA_DB_URL)"
    return f"{dsn.get('host', 'localhost')}:{dsn.get('port', '5432')}/{dsn.get('dbname', '')}"


class LedgerConnection:
    """One connection to the ledger, every wait for the server bounded and interruptible.

    It runs in psycopg2's asynchronous mode so that each wait is a ``select()`` in Python with a
    deadline. A blocking libpq call can be neither bounded nor interrupted: libpq's
    ``connect_timeout`` covers only the connect (whole seconds, at least 2, per address) and nothing
    covers a server that stops answering a query; and libpq retries its ``poll()`` on EINTR, so a
    signal (the task's execution_timeout alarm, a kill's SIGTERM) is handled only when the call
    returns, which against a silent server is never. Asynchronous connections autocommit: a
    transaction is BEGIN ... COMMIT, sent by ``transaction``."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.where = _describe(url)
        self.settings = settings
        self._conn: psycopg2.extensions.connection | None = None
        try:
            # TCP keepalives: a connection whose peer vanished (host down, network cut) is found dead
            # by the kernel and never lingers in the pool of a long-lived process such as the syncer;
            # every wait is bounded in Python anyway (see _wait).
            self._conn = psycopg2.connect(
                url, async_=True, keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3
            )
            self._wait(
                settings.quota_db_connect_timeout_seconds, "while connecting", "CP_QUOTA_DB_CONNECT_TIMEOUT_SECONDS"
            )
        except psycopg2.Error as exc:
            self.close()
            raise QuotaLedgerError(f"quota ledger {self.where}: cannot connect: {str(exc).strip()}") from exc
        except BaseException:
            self.close()
            raise

    def execute(self, statement: str, params: Any = None) -> psycopg2.extensions.cursor:
        """Send one statement and wait for its answer; returns the cursor to fetch from."""
        assert self._conn is not None
        cur = self._conn.cursor()
        try:
            cur.execute(statement, params)
            self._wait(
                self.settings.quota_db_statement_timeout_seconds,
                "to a statement",
                "CP_QUOTA_DB_STATEMENT_TIMEOUT_SECONDS",
            )
        except psycopg2.errors.LockNotAvailable as exc:
            raise QuotaLedgerError(
                f"quota ledger {self.where}: a lock was not granted within "
                f"{self.settings.quota_db_lock_timeout_seconds} s (CP_QUOTA_DB_LOCK_TIMEOUT_SECONDS)"
            ) from exc
        except psycopg2.errors.QueryCanceled as exc:
            raise QuotaLedgerError(
                f"quota ledger {self.where}: a statement ran longer than "
                f"{self.settings.quota_db_statement_timeout_seconds} s (CP_QUOTA_DB_STATEMENT_TIMEOUT_SECONDS)"
            ) from exc
        except psycopg2.Error as exc:
            raise QuotaLedgerError(f"quota ledger {self.where}: {str(exc).strip()}") from exc
        return cur

    @contextmanager
    def transaction(self) -> Iterator[LedgerConnection]:
        """BEGIN with the server-side bounds, COMMIT on success. On an error the caller closes the
        connection and the server rolls back. idle_in_transaction_session_timeout ends a transaction
        whose client vanished (a worker's host lost) instead of letting it hold a customer's gate."""
        statement_ms = round(self.settings.quota_db_statement_timeout_seconds * 1000)
        self.execute(
            "BEGIN; SET LOCAL statement_timeout = %s; SET LOCAL lock_timeout = %s;"
            " SET LOCAL idle_in_transaction_session_timeout = %s",
            (statement_ms, round(self.settings.quota_db_lock_timeout_seconds * 1000), statement_ms),
        )
        yield self
        self.execute("COMMIT")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _wait(self, bound_seconds: float, what: str, setting: str) -> None:
        assert self._conn is not None
        deadline = time.monotonic() + bound_seconds
        while True:
            state = self._conn.poll()
            if state == psycopg2.extensions.POLL_OK:
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise QuotaLedgerError(
                    f"quota ledger {self.where}: no answer within {bound_seconds} s {what} ({setting})"
                )
            fileno = self._conn.fileno()  # may change while connecting (another address, TLS fallback)
            if state == psycopg2.extensions.POLL_READ:
                select.select([fileno], [], [], remaining)
            else:
                select.select([], [fileno], [], remaining)


def _wait_for_customer_gate(conn: LedgerConnection, customer_id: str) -> None:
    """Take the customer's advisory lock, waiting in Python between tries rather than inside one
    blocking call: each try is one short statement, and a signal (the task's execution_timeout
    alarm, a kill's SIGTERM) is handled while it waits."""
    delay = 0.005
    while True:
        if conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (f"cp_quota:{customer_id}",)).fetchone()[0]:
            return
        time.sleep(delay)
        delay = min(delay * 2, GATE_POLL_MAX_SECONDS)


class QuotaLedger:
    def __init__(self, settings: Settings, *, clock: Clock = _utcnow) -> None:
        self.url = settings.require_quota_db_url()
        self.settings = settings
        self.clock = clock

    @contextmanager
    def _transaction(self) -> Iterator[LedgerConnection]:
        conn = LedgerConnection(self.url, self.settings)
        try:
            with conn.transaction():
                yield conn
        finally:
            conn.close()

    def ensure_schema(self) -> None:
        with self._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('cp_quota_schema'))")
            conn.execute(raw_sql("quota/001_schema.sql"))

    def used_on(self, day: date) -> dict[str, int]:
        """Executions counted against each customer's daily quota on ``day`` (UTC)."""
        with self._transaction() as conn:
            rows = conn.execute(raw_sql("quota/usage_today.sql"), {"usage_day": day}).fetchall()
        return {str(customer_id): int(used) for customer_id, used in rows}

    def used_in_month(self, month: date) -> dict[str, int]:
        """Executions counted against each customer's monthly quota in the month starting ``month``."""
        with self._transaction() as conn:
            rows = conn.execute(raw_sql("quota/usage_month.sql"), {"usage_month": month}).fetchall()
        return {str(customer_id): int(used) for customer_id, used in rows}

    def reserve(self, customer: Customer, run_key: str, *, tick: datetime | None = None) -> QuotaDecision:
        """Take one unit for ``run_key`` on the UTC day and month of ``tick`` (a scheduled run's
        logical date), or of now when None."""
        now = self.clock().astimezone(UTC)
        day: date = (tick.astimezone(UTC) if tick is not None else now).date()
        month: date = day.replace(day=1)
        with self._transaction() as conn:
            _wait_for_customer_gate(conn, customer.customer_id)
            held = conn.execute("SELECT 1 FROM cp_quota_reservations WHERE run_key = %s", (run_key,)).fetchone()
            used_today, used_month = conn.execute(
                raw_sql("quota/reserve.sql"),
                {"customer_id": customer.customer_id, "usage_day": day, "usage_month": month},
            ).fetchone()
            decision = QuotaDecision(
                True,
                None,
                used_today,
                used_month,
                customer.daily_run_limit,
                customer.monthly_run_limit,
                reused=held is not None,
            )
            if held is not None:
                return decision
            refusal = _limit_reached(customer, used_today, used_month)
            if refusal is not None:
                return dataclasses.replace(decision, allowed=False, reason=refusal)
            conn.execute(
                "INSERT INTO cp_quota_reservations (run_key, customer_id, usage_day, usage_month, reserved_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (run_key, customer.customer_id, day, month, now),
            )
            return QuotaDecision(
                True, None, used_today + 1, used_month + 1, customer.daily_run_limit, customer.monthly_run_limit
            )


class QuotaExemptions:
    """Backfill ticks an operator exempted from the quota (table ``cp_quota_exemptions``): the
    decision is recorded with who made it; the operator consults it only for backfill runs."""

    def __init__(self, settings: Settings) -> None:
        self._ledger = QuotaLedger(settings)

    def record(self, dag_id: str, ticks: Sequence[datetime], *, backfill_id: int | None, decided_by: str) -> None:
        with self._ledger._transaction() as conn:
            conn.execute(
                "INSERT INTO cp_quota_exemptions (dag_id, logical_date, backfill_id, decided_by, decided_at)"
                " SELECT %s, unnest(%s::timestamptz[]), %s, %s, now()"
                " ON CONFLICT (dag_id, logical_date) DO UPDATE SET backfill_id = EXCLUDED.backfill_id,"
                " decided_by = EXCLUDED.decided_by, decided_at = EXCLUDED.decided_at",
                (dag_id, list(ticks), backfill_id, decided_by),
            )

    def decided_by(self, dag_id: str, logical_date: datetime) -> str | None:
        """Who exempted this tick, or None: it counts."""
        with self._ledger._transaction() as conn:
            row = conn.execute(
                "SELECT decided_by FROM cp_quota_exemptions WHERE dag_id = %s AND logical_date = %s",
                (dag_id, logical_date),
            ).fetchone()
        return row[0] if row else None


class SyncerPauses:
    """The ledger of DAGs the syncer paused (table ``cp_syncer_pauses``, beside the quota ledger):
    what lets every sync round converge on the desired paused flags without unpausing a DAG a
    person paused by hand. Bounded like every ledger call (CP_QUOTA_DB_*_TIMEOUT_SECONDS)."""

    def __init__(self, settings: Settings) -> None:
        self._ledger = QuotaLedger(settings)

    def held(self, only: set[str] | None = None) -> set[str]:
        """The DAGs the syncer paused (of ``only``, when given: one write of the API reads its own)."""
        with self._ledger._transaction() as conn:
            if only is not None:
                rows = conn.execute(
                    "SELECT dag_id FROM cp_syncer_pauses WHERE dag_id = ANY(%s::text[])", (sorted(only),)
                ).fetchall()
            else:
                rows = conn.execute("SELECT dag_id FROM cp_syncer_pauses").fetchall()
            return {row[0] for row in rows}

    def record(self, *, paused: set[str], released: set[str]) -> None:
        if not paused and not released:
            return
        with self._ledger._transaction() as conn:
            conn.execute(
                "INSERT INTO cp_syncer_pauses (dag_id, paused_at) SELECT unnest(%s::text[]), now()"
                " ON CONFLICT DO NOTHING",
                (sorted(paused),),
            )
            conn.execute("DELETE FROM cp_syncer_pauses WHERE dag_id = ANY(%s::text[])", (sorted(released),))
