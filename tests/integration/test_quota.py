"""The quota gate on a real PostgreSQL: concurrent starts never exceed a limit; retries count once;
the UTC day and month roll over (with an injected clock, not sleeping)."""

from __future__ import annotations

import os
import signal
import threading
import time
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from customer_pipelines.models import Customer
from customer_pipelines.quota import QuotaLedger
from customer_pipelines.settings import Settings

pytestmark = pytest.mark.integration


@pytest.fixture
def ledger_factory(quota_db_url):
    settings = Settings(quota_db_url=quota_db_url)
    QuotaLedger(settings).ensure_schema()

    def make(clock=None) -> QuotaLedger:
        return QuotaLedger(settings, clock=clock) if clock else QuotaLedger(settings)

    return make


def _customer(customer_id: str, daily: int, monthly: int) -> Customer:
    return Customer(
        customer_id=customer_id,
        status="ACTIVE",
        plan="PROFESSIONAL",
        daily_run_limit=daily,
        monthly_run_limit=monthly,
        max_concurrent_runs=12,
    )


@pytest.mark.parametrize("round_number", range(5))
def test_twelve_simultaneous_starts_take_exactly_the_five_daily_units(ledger_factory, round_number):
    customer = _customer(f"race_{round_number}_{datetime.now(UTC):%H%M%S%f}", daily=5, monthly=100)
    barrier = threading.Barrier(12)
    decisions = []

    def start(i: int) -> None:
        ledger = ledger_factory()
        barrier.wait()  # release all twelve at once
        decisions.append(ledger.reserve(customer, f"{customer.customer_id}/run_{i}"))

    threads = [threading.Thread(target=start, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sum(d.allowed for d in decisions) == 5
    assert sorted(d.reason for d in decisions if not d.allowed) == ["DAILY_LIMIT"] * 7


def test_a_retry_of_a_run_reuses_its_reservation(ledger_factory):
    customer = _customer(f"retry_{datetime.now(UTC):%H%M%S%f}", daily=1, monthly=10)
    ledger = ledger_factory()
    first = ledger.reserve(customer, f"{customer.customer_id}/run_1")
    retry = ledger.reserve(customer, f"{customer.customer_id}/run_1")
    other = ledger.reserve(customer, f"{customer.customer_id}/run_2")
    assert first.allowed and retry.allowed and retry.reused
    assert not other.allowed and other.reason == "DAILY_LIMIT"


def test_monthly_limit_refuses_with_daily_room_left_until_the_next_month(ledger_factory):
    customer = _customer(f"month_{datetime.now(UTC):%H%M%S%f}", daily=10, monthly=3)
    now = [datetime(2026, 3, 30, 12, 0, tzinfo=UTC)]
    ledger = ledger_factory(clock=lambda: now[0])

    for i in range(3):  # three days, one run each: the monthly limit is used up
        assert ledger.reserve(customer, f"{customer.customer_id}/m{i}").allowed
        now[0] += timedelta(hours=5) if i == 0 else timedelta(hours=1)
    refused = ledger.reserve(customer, f"{customer.customer_id}/m3")
    assert not refused.allowed and refused.reason == "MONTHLY_LIMIT" and refused.used_today < 10

    now[0] = datetime(2026, 4, 1, 0, 0, tzinfo=UTC)  # a new UTC month
    assert ledger.reserve(customer, f"{customer.customer_id}/m4").allowed


def test_daily_limit_resets_on_the_next_utc_day(ledger_factory):
    customer = _customer(f"day_{datetime.now(UTC):%H%M%S%f}", daily=2, monthly=100)
    now = [datetime(2026, 5, 10, 23, 59, tzinfo=UTC)]
    ledger = ledger_factory(clock=lambda: now[0])
    assert ledger.reserve(customer, f"{customer.customer_id}/d1").allowed
    assert ledger.reserve(customer, f"{customer.customer_id}/d2").allowed
    assert ledger.reserve(customer, f"{customer.customer_id}/d3").reason == "DAILY_LIMIT"
    now[0] += timedelta(minutes=2)  # 00:01 the next day
    assert ledger.reserve(customer, f"{customer.customer_id}/d3").allowed


def test_a_run_waiting_at_a_held_gate_is_interrupted_by_its_timeout_signal(ledger_factory, quota_db_url):
    """execution_timeout is a SIGALRM in the task process: waiting for the gate must let it through."""
    customer = _customer(f"gate_{datetime.now(UTC):%H%M%S%f}", daily=5, monthly=10)
    holder = psycopg2.connect(quota_db_url)

    def timed_out(signum, frame):
        raise TimeoutError("execution_timeout")

    previous = signal.signal(signal.SIGALRM, timed_out)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cp_quota:{customer.customer_id}",))
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        began = time.monotonic()
        with pytest.raises(TimeoutError):
            ledger_factory().reserve(customer, f"{customer.customer_id}/run_1")
        waited = time.monotonic() - began
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        holder.rollback()
        holder.close()
    assert waited < 5, f"the timeout signal was handled only after {waited:.1f} s"
    # Nothing was reserved by the interrupted attempt, and the gate works once released.
    decision = ledger_factory().reserve(customer, f"{customer.customer_id}/run_1")
    assert decision.allowed and not decision.reused and decision.used_today == 1


@pytest.mark.skipif(bool(os.environ.get("CP_TEST_POSTGRES_URL")), reason="CP_TEST_POSTGRES_URL names the server")
def test_without_a_configured_server_the_ledger_is_on_the_embedded_postgres_over_a_unix_socket(quota_db_url):
    """make test needs no PostgreSQL of the machine: no TCP connection, no 127.0.0.1:5432."""
    with psycopg2.connect(quota_db_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT inet_server_addr(), current_setting('data_directory')")
        address, data_directory = cur.fetchone()
    conn.close()
    assert address is None, f"connected over TCP to {address}"
    assert data_directory.startswith("/var/tmp/cp-test-pg-")
