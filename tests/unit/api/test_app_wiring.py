"""The app's wiring, in process, over a stand-in service layer (the real one is exercised on
Airflow's API server by tests/e2e/api): authentication first, deny-all when Airflow's auth cannot
load, 429 with Retry-After over the rate, and one problem-details shape for errors."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from customer_pipelines.api import auth
from customer_pipelines.api.app import create_app
from customer_pipelines.api.auth import RateLimiter
from customer_pipelines.api.errors import ApiError
from customer_pipelines.api.keys import KeyRing, new_key


class StandInServices:
    """Only what the routes below touch: keys, the rate limiter, and two reads."""

    def __init__(self, key_row: dict[str, Any], per_minute: int) -> None:
        self.keys = KeyRing(lambda: [key_row], refresh_seconds=3600)
        self.rate_limiter = RateLimiter(per_minute)

    def cached_answer(self, key: tuple[Any, ...]) -> bytes | None:
        return None

    def answer(self, key: tuple[Any, ...], read: Any) -> bytes:
        return JSONResponse(read()).body

    def list_configs(self, customer_id: str, **_: Any) -> dict[str, Any]:
        return {"items": [], "next_cursor": None}

    def get_config(self, customer_id: str, config_id: str) -> dict[str, Any]:
        raise ApiError(404, f"config {config_id} of customer {customer_id} not found")


@pytest.fixture
def key_and_client():
    issued = new_key("cust_a", expires_at=None)
    client = TestClient(create_app(services=StandInServices(issued.row, per_minute=3)))
    return issued.key, client


def test_a_key_over_its_rate_gets_429_with_retry_after(key_and_client):
    key, client = key_and_client
    statuses = [client.get("/customers/cust_a/configs", headers={"X-API-Key": key}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = client.get("/customers/cust_a/configs", headers={"X-API-Key": key})
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["content-type"].startswith("application/problem+json")


def test_every_route_refuses_everyone_when_airflows_auth_cannot_load(key_and_client, monkeypatch):
    key, client = key_and_client
    monkeypatch.setattr(auth, "AUTH_UNAVAILABLE", "ImportError: simulated")
    for method, path in (("GET", "/customers/cust_a/configs"), ("GET", "/fleet/status"), ("POST", "/customers")):
        response = client.request(method, path, headers={"X-API-Key": key})
        assert response.status_code == 503 and "refused" in response.json()["detail"]


def test_errors_are_problem_details_naming_the_field(key_and_client):
    key, client = key_and_client
    missing = client.get("/customers/cust_a/configs/nope", headers={"X-API-Key": key})
    assert missing.status_code == 404
    assert missing.json() == {
        "type": "about:blank",
        "title": "Not found",
        "status": 404,
        "detail": "config nope of customer cust_a not found",
    }
    bad = client.get("/customers/cust_a/configs", params={"limit": 0}, headers={"X-API-Key": key})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "limit"
    assert client.get("/customers/cust_a/configs").status_code == 401
