"""Every route of the API against every kind of caller, on Airflow's real API server. The routes
come from the app's own route table, so a new route cannot skip the matrix."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.routing import APIRoute

from customer_pipelines.api.app import create_app
from customer_pipelines.api.auth import AUTHORIZERS
from tests_support import config_body, onboard

pytestmark = pytest.mark.e2e

ROUTES = [
    (method, route.path)
    for route in create_app(services=object()).routes
    if isinstance(route, APIRoute)
    for method in sorted(route.methods)
]
DENIED = (401, 403)


def _concrete(path: str, customer_id: str) -> str:
    values = {"customer_id": customer_id, "config_id": "matrix_cfg", "key_id": "0" * 16, "backfill_id": "1"}
    return re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)


def _is_operator_route(path: str) -> bool:
    return (
        path.startswith("/fleet")
        or path == "/customers"
        or not any(
            part in path
            for part in (
                "/configs",
                "/runs",
                "/usage",
                "/pause-all",
                "/resume-all",
                "/config-previews",
                "/missed-runs",
                "/backfills",
            )
        )
    )


@pytest.fixture(scope="module")
def callers(api):
    """Customer A (with a config) and B, each with a key; A's revoked and expired keys."""
    a = onboard(api, "cust_matrix_a")
    b = onboard(api, "cust_matrix_b")
    created = api.admin("POST", "/customers/cust_matrix_a/configs", json=config_body("matrix_cfg"))
    assert created.status_code == 201, created.text
    revoked = api.admin("POST", "/customers/cust_matrix_a/api-keys").json()
    assert api.admin("DELETE", f"/customers/cust_matrix_a/api-keys/{revoked['key_id']}").status_code == 200
    soon = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    expired = api.admin("POST", "/customers/cust_matrix_a/api-keys", json={"expires_at": soon}).json()
    time.sleep(3)
    return {"a_key": a["api_key"], "b_key": b["api_key"], "revoked": revoked["api_key"], "expired": expired["api_key"]}


def test_every_route_depends_on_exactly_one_authoriser():
    app = create_app(services=object())
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        calls = {d.call for d in route.dependant.dependencies}
        assert len(calls & set(AUTHORIZERS)) == 1, route.path
    # and authentication is declared once, for the whole app
    assert [d.dependency.__name__ for d in app.router.dependencies] == ["authenticate"]


@pytest.mark.parametrize(("method", "path"), ROUTES, ids=[f"{m} {p}" for m, p in ROUTES])
def test_the_auth_matrix_holds_for_every_route(api, callers, method, path):
    url = _concrete(path, "cust_matrix_a")
    operator_route = _is_operator_route(path)

    def status(**kwargs) -> int:
        return api.call(method, url, json={}, **kwargs).status_code

    assert status() == 401, "no credentials"
    assert status(key="cpk_0123456789abcdef_" + "x" * 43) == 401, "a key that was never issued"
    assert status(key="not-a-key") == 401, "a malformed key"
    assert status(key=callers["revoked"]) == 401, "a revoked key"
    assert status(key=callers["expired"]) == 401, "an expired key"
    assert status(token="not.a.jwt") == 401, "a bad Airflow token"
    assert status(token=api.norole_token) == 403, "an Airflow user without permission"
    # customer B's key on customer A's routes: not found (A's ids are not revealed), or forbidden
    assert status(key=callers["b_key"]) == (403 if operator_route else 404)
    # customer A's own key: its routes pass authorisation; the operators' routes do not
    assert (status(key=callers["a_key"]) in DENIED) is operator_route
    # a viewer reads, and changes nothing
    assert (status(token=api.viewer_token) in DENIED) is (method != "GET")
    assert status(token=api.admin_token) not in DENIED, "an Airflow admin"
