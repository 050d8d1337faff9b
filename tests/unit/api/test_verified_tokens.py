"""Airflow tokens verified lately: reused for CP_API_TOKEN_CACHE_SECONDS at most, never past the
token's exp, by the exact token string, and with Airflow's permission answers kept alongside."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient

from customer_pipelines.api import auth
from customer_pipelines.api.app import create_app
from customer_pipelines.api.auth import Caller, VerifiedTokens


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(auth, "time", fake)
    return fake


def token(exp: float, sub: str = "alice") -> str:
    return jwt.encode({"sub": sub, "exp": int(exp)}, "not-the-server-secret-but-long-enough", algorithm="HS256")


def test_a_verified_token_is_held_for_the_cache_time_at_most(clock):
    tokens, alice = VerifiedTokens(seconds=5), Caller(name="alice")
    held = token(clock.now + 3600)
    tokens.put(held, alice)
    assert tokens.get(held) is alice
    assert tokens.get(held + "x") is None and tokens.get(token(clock.now + 3600, "bob")) is None
    clock.now += 5
    assert tokens.get(held) is None


def test_a_verified_token_is_never_held_past_its_exp(clock):
    tokens = VerifiedTokens(seconds=60)
    soon, expired, no_exp = token(clock.now + 2), token(clock.now - 1), jwt.encode({"sub": "a"}, "k" * 32)
    for held in (soon, expired, no_exp):
        tokens.put(held, Caller(name="alice"))
    assert tokens.get(soon) is not None and tokens.get(expired) is None and tokens.get(no_exp) is None
    clock.now += 2
    assert tokens.get(soon) is None


def test_verified_tokens_are_bounded_and_can_be_turned_off(clock):
    tokens = VerifiedTokens(seconds=5, max_entries=2)
    first, second, third = (token(clock.now + 60, sub) for sub in ("a", "b", "c"))
    for held in (first, second, third):
        tokens.put(held, Caller(name="x"))
    assert tokens.get(first) is None and tokens.get(second) is not None and tokens.get(third) is not None
    off = VerifiedTokens(seconds=0)
    off.put(first, Caller(name="x"))
    assert off.get(first) is None


def test_a_bearer_token_is_verified_and_authorised_once_while_held(api, monkeypatch):
    services, _, _, first, _ = api
    verified, asked = [], []

    async def resolve(token_: str) -> Any:
        verified.append(token_)
        return type("User", (), {"get_name": lambda self: "alice"})()

    monkeypatch.setattr(auth, "resolve_user_from_token", resolve)
    monkeypatch.setattr(auth, "_ask_airflow", lambda user, check, method: asked.append((check, method)) or True)
    client = TestClient(create_app(services=services))
    bearer = {"Authorization": f"Bearer {token(time.time() + 3600)}"}
    for _ in range(3):
        assert client.get(f"/customers/{first}/configs", headers=bearer).status_code == 200
    assert len(verified) == 1 and asked == [("dag", "GET")]
    other = {"Authorization": f"Bearer {token(time.time() + 3600, 'bob')}"}
    assert client.get(f"/customers/{first}/configs", headers=other).status_code == 200
    assert len(verified) == 2, "another token is verified on its own"
