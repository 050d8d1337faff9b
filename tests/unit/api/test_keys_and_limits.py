"""api/keys.py and the rate limiter: a key authenticates only whole, unexpired and not revoked;
a caller over its rate waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from customer_pipelines.api.auth import RateLimiter
from customer_pipelines.api.keys import KeyRing, new_key


def _ring(*rows):
    loads = []

    def load():
        loads.append(1)
        return [dict(r) for r in rows]

    return KeyRing(load, refresh_seconds=3600), loads


def test_an_issued_key_authenticates_as_its_customer_and_only_its_hash_is_stored():
    issued = new_key("cust_a", expires_at=None)
    assert issued.key not in str(issued.row) and issued.key_id in issued.key
    ring, _ = _ring(issued.row)
    record, why = ring.verify(issued.key)
    assert record is not None and record.customer_id == "cust_a" and why == ""


def test_a_key_with_a_wrong_secret_malformed_expired_or_revoked_is_refused_with_the_reason():
    issued = new_key("cust_a", expires_at=datetime.now(UTC) + timedelta(hours=1))
    ring, _ = _ring(issued.row)
    wrong = issued.key[:-4] + ("AAAA" if not issued.key.endswith("AAAA") else "BBBB")
    assert ring.verify(wrong) == (None, "unknown or revoked API key")
    assert ring.verify("Bearer something") == (None, "not an API key of this service")
    assert ring.verify(issued.key, now=datetime.now(UTC) + timedelta(hours=2)) == (None, "API key expired")
    ring.revoke(issued.key_id)
    assert ring.verify(issued.key)[0] is None


def test_a_key_issued_by_another_server_is_found_by_one_reload_not_one_per_request():
    issued = new_key("cust_a", expires_at=None)
    rows: list[dict] = []
    loads = []

    def load():
        loads.append(1)
        return list(rows)

    ring = KeyRing(load, refresh_seconds=3600)
    assert ring.verify(issued.key)[0] is None  # first use: loaded once
    rows.append(issued.row)
    for _ in range(50):
        ring.verify("cpk_0123456789abcdef_" + "x" * 43)  # unknown ids do not reload every time
    assert len(loads) <= 2


def test_a_caller_over_its_rate_gets_a_wait_and_another_caller_does_not():
    limiter = RateLimiter(per_minute=3)
    assert [limiter.retry_after("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.retry_after("a") > 0
    assert limiter.retry_after("b") == 0.0


def test_a_key_revoked_here_stays_refused_when_a_reload_still_returns_it():
    issued = new_key("cust_a", expires_at=None)
    ring = KeyRing(lambda: [dict(issued.row)], refresh_seconds=0)  # every call reloads
    assert ring.verify(issued.key)[0] is not None
    ring.revoke(issued.key_id)
    assert ring.verify(issued.key) == (None, "unknown or revoked API key")
