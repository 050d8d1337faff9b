"""The quota gate on a real PostgreSQL: concurrent starts never exceed a limit; retries count once;
the UTC day and month roll over (with an injected clock, not sleeping); every wait for the ledger
is bounded, also against a server that accepts connections and never answers."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from customer_pipelines.models import Customer
from customer_pipelines.runs.quota import QuotaLedger, QuotaLedgerError
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


GIVE_UP_SECONDS = 20
"""The silent servers below hang up after this long, so that code without bounds fails these
tests (it would wait until then) instead of hanging the suite."""


@contextlib.contextmanager
def _silent_server() -> Iterator[str]:
    """A TCP server on loopback that accepts every connection and never answers (a hung
    PostgreSQL, a half-dead proxy); yields a ledger URL pointing at it."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.1)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        give_up = time.monotonic() + GIVE_UP_SECONDS
        while not stop.is_set() and time.monotonic() < give_up:
            with contextlib.suppress(TimeoutError):
                accepted.append(listener.accept()[0])
        for conn in accepted:
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"postgresql://ledger:secret@127.0.0.1:{listener.getsockname()[1]}/customer_pipelines"
    finally:
        stop.set()
        thread.join()
        listener.close()


@contextlib.contextmanager
def _proxy_that_goes_silent(upstream_url: str, on_client_bytes: bytes) -> Iterator[str]:
    """A TCP proxy to the real PostgreSQL that stops passing the server's answers once the client
    has sent ``on_client_bytes`` (a network that drops replies mid-session: a fault this machine
    cannot otherwise cause without firewall rules), and hangs up GIVE_UP_SECONDS later; yields the
    URL through it."""
    dsn = psycopg2.extensions.parse_dsn(upstream_url)
    host, port = dsn.get("host", "127.0.0.1"), int(dsn.get("port", 5432))

    def connect_upstream() -> socket.socket:
        if host.startswith("/"):  # the embedded PostgreSQL listens on a Unix socket only
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(f"{host}/.s.PGSQL.{port}")
            return sock
        return socket.create_connection((host, port))

    listener = socket.create_server(("127.0.0.1", 0))
    silent = threading.Event()
    sockets: list[socket.socket] = [listener]

    def close_all() -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pumps blocked in recv()
            sock.close()

    hang_up = threading.Timer(GIVE_UP_SECONDS, close_all)

    def pump(source: socket.socket, target: socket.socket, watch: bool) -> None:
        with contextlib.suppress(OSError):
            seen = b""
            while data := source.recv(65536):
                if watch:
                    seen = (seen + data)[-4096:]
                    if on_client_bytes in seen and not silent.is_set():
                        silent.set()
                        hang_up.start()
                if watch or not silent.is_set():
                    target.sendall(data)

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client = listener.accept()[0]
                server = connect_upstream()
                sockets.extend([client, server])
                threading.Thread(target=pump, args=(client, server, True), daemon=True).start()
                threading.Thread(target=pump, args=(server, client, False), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        user = dsn.get("user", "postgres")
        yield f"postgresql://{user}@127.0.0.1:{listener.getsockname()[1]}/{dsn['dbname']}"
    finally:
        hang_up.cancel()
        close_all()


def _bounded(url: str, **bounds: float) -> Settings:
    return Settings(quota_db_url=url, **{f"quota_db_{k}_timeout_seconds": v for k, v in bounds.items()})


def test_a_reservation_against_a_server_that_never_answers_fails_within_the_connect_bound():
    customer = _customer("silent_reserve", daily=5, monthly=10)
    with _silent_server() as url:
        began = time.monotonic()
        with pytest.raises(QuotaLedgerError) as failure:
            QuotaLedger(_bounded(url, connect=1.0)).reserve(customer, "silent_reserve/run_1")
        waited = time.monotonic() - began
    assert waited < 3, f"reserve waited {waited:.1f} s against a 1 s bound"
    message = str(failure.value)
    assert "CP_QUOTA_DB_CONNECT_TIMEOUT_SECONDS" in message and "127.0.0.1:" in message
    assert "secret" not in message  # the URL's password is never shown


def test_the_syncers_schema_step_against_a_server_that_never_answers_fails_within_the_connect_bound():
    with _silent_server() as url:
        began = time.monotonic()
        with pytest.raises(QuotaLedgerError, match="CP_QUOTA_DB_CONNECT_TIMEOUT_SECONDS"):
            QuotaLedger(_bounded(url, connect=1.0)).ensure_schema()
        waited = time.monotonic() - began
    assert waited < 3, f"ensure_schema waited {waited:.1f} s against a 1 s bound"


def test_a_timeout_signal_interrupts_a_connect_to_a_silent_server_at_once():
    """execution_timeout is a SIGALRM in the task process: a connect waiting on a silent server
    must let it through long before the connect bound (a blocking libpq connect did not)."""
    customer = _customer("silent_alarm", daily=5, monthly=10)

    def timed_out(signum, frame):
        raise TimeoutError("execution_timeout")

    previous = signal.signal(signal.SIGALRM, timed_out)
    try:
        with _silent_server() as url:
            signal.setitimer(signal.ITIMER_REAL, 0.5)
            began = time.monotonic()
            with pytest.raises(TimeoutError, match="execution_timeout"):
                QuotaLedger(_bounded(url, connect=60.0)).reserve(customer, "silent_alarm/run_1")
            waited = time.monotonic() - began
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert waited < 2, f"the timeout signal was handled only after {waited:.1f} s"


def test_a_server_that_stops_answering_mid_reservation_fails_within_the_statement_bound(ledger_factory, quota_db_url):
    customer = _customer(f"mute_{datetime.now(UTC):%H%M%S%f}", daily=5, monthly=10)
    with _proxy_that_goes_silent(quota_db_url, on_client_bytes=b"pg_try_advisory_xact_lock") as url:
        began = time.monotonic()
        with pytest.raises(QuotaLedgerError, match="CP_QUOTA_DB_STATEMENT_TIMEOUT_SECONDS"):
            QuotaLedger(_bounded(url, statement=1.0)).reserve(customer, f"{customer.customer_id}/run_1")
        waited = time.monotonic() - began
    assert waited < 3, f"reserve waited {waited:.1f} s against a 1 s bound"
    # Nothing was reserved by the cut-off attempt.
    assert ledger_factory().reserve(customer, f"{customer.customer_id}/run_1").used_today == 1


def test_a_schema_lock_held_by_another_syncer_fails_ensure_schema_within_the_lock_bound(ledger_factory, quota_db_url):
    holder = psycopg2.connect(quota_db_url)
    release = threading.Timer(GIVE_UP_SECONDS, holder.rollback)  # unbounded code would wait until then
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('cp_quota_schema'))")
        release.start()
        began = time.monotonic()
        with pytest.raises(QuotaLedgerError, match="CP_QUOTA_DB_LOCK_TIMEOUT_SECONDS"):
            QuotaLedger(_bounded(quota_db_url, lock=0.5)).ensure_schema()
        waited = time.monotonic() - began
    finally:
        release.cancel()
        holder.rollback()
        holder.close()
    assert waited < 2, f"ensure_schema waited {waited:.1f} s for the lock against a 0.5 s bound"
    ledger_factory().ensure_schema()  # and it works once the lock is free
