"""Daily and monthly run quotas that are never exceeded, however many runs start at once.

The check-and-record is serialised per customer by a PostgreSQL advisory lock held for one short
transaction: count the customer's reservations of the UTC day and month, refuse if either limit is
reached, else insert this run's reservation. Two workers starting the customer's last unit in the
same millisecond queue on the lock; the second one sees the first's row. A run's retries find its
reservation (keyed by dag_id/run_id) and are not counted again.

What counts: a run that started its pipeline. Which calendar: UTC, at the moment the run asks."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

import psycopg2

from customer_pipelines.models import Customer
from customer_pipelines.settings import Settings
from customer_pipelines.sql import raw_sql

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


def _wait_for_customer_gate(cur: psycopg2.extensions.cursor, customer_id: str) -> None:
    """Take the customer's advisory lock, waiting in Python between tries rather than inside one
    blocking libpq call: a signal (the task's execution_timeout alarm, a kill's SIGTERM) is only
    handled when Python code runs, so a task blocked in libpq could not be timed out here."""
    delay = 0.005
    while True:
        cur.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))", (f"cp_quota:{customer_id}",))
        if cur.fetchone()[0]:
            return
        time.sleep(delay)
        delay = min(delay * 2, GATE_POLL_MAX_SECONDS)


class QuotaLedger:
    def __init__(self, settings: Settings, *, clock: Clock = _utcnow) -> None:
        self.url = settings.require_quota_db_url()
        self.clock = clock

    def _connect(self) -> psycopg2.extensions.connection:
        return psycopg2.connect(self.url)

    def ensure_schema(self) -> None:
        conn = self._connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(hashtext('cp_quota_schema'))")
                cur.execute(raw_sql("quota/001_schema.sql"))
        finally:
            conn.close()

    def reserve(self, customer: Customer, run_key: str) -> QuotaDecision:
        now = self.clock().astimezone(UTC)
        day: date = now.date()
        month: date = day.replace(day=1)
        conn = self._connect()
        try:
            with conn, conn.cursor() as cur:
                _wait_for_customer_gate(cur, customer.customer_id)
                cur.execute("SELECT 1 FROM cp_quota_reservations WHERE run_key = %s", (run_key,))
                held = cur.fetchone() is not None
                cur.execute(
                    raw_sql("quota/reserve.sql"),
                    {"customer_id": customer.customer_id, "usage_day": day, "usage_month": month},
                )
                used_today, used_month = cur.fetchone()
                decision = QuotaDecision(
                    True,
                    None,
                    used_today,
                    used_month,
                    customer.daily_run_limit,
                    customer.monthly_run_limit,
                    reused=held,
                )
                if held:
                    return decision
                refusal = _limit_reached(customer, used_today, used_month)
                if refusal is not None:
                    return dataclasses.replace(decision, allowed=False, reason=refusal)
                cur.execute(
                    "INSERT INTO cp_quota_reservations (run_key, customer_id, usage_day, usage_month, reserved_at)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (run_key, customer.customer_id, day, month, now),
                )
                return QuotaDecision(
                    True, None, used_today + 1, used_month + 1, customer.daily_run_limit, customer.monthly_run_limit
                )
        finally:
            conn.close()


class SyncerPauses:
    """The ledger of DAGs the syncer paused (table ``cp_syncer_pauses``, beside the quota ledger):
    what lets every sync round converge on the desired paused flags without unpausing a DAG a
    person paused by hand."""

    def __init__(self, settings: Settings) -> None:
        self._ledger = QuotaLedger(settings)

    def held(self) -> set[str]:
        conn = self._ledger._connect()
        try:
            with conn, conn.cursor() as cur:
                cur.execute("SELECT dag_id FROM cp_syncer_pauses")
                return {row[0] for row in cur.fetchall()}
        finally:
            conn.close()

    def record(self, *, paused: set[str], released: set[str]) -> None:
        if not paused and not released:
            return
        conn = self._ledger._connect()
        try:
            with conn, conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO cp_syncer_pauses (dag_id, paused_at) VALUES (%s, now()) ON CONFLICT DO NOTHING",
                    [(d,) for d in sorted(paused)],
                )
                cur.execute("DELETE FROM cp_syncer_pauses WHERE dag_id = ANY(%s)", (sorted(released),))
        finally:
            conn.close()
