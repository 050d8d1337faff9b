"""The REST API as Airflow's API server serves it on the e2e stack: callers of every kind."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from customer_pipelines.api.app import URL_PREFIX

MINT_TOKEN = """
import sys
from airflow.api_fastapi.app import create_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
manager = create_auth_manager()
manager.init()
role = sys.argv[2] or None
print(manager.generate_jwt(SimpleAuthManagerUser(username=sys.argv[1], role=role)))
"""


def mint_token(env: dict[str, str], username: str, role: str | None) -> str:
    """A real Airflow JWT for a user of ``role`` (None: a user Airflow grants nothing), signed by
    the stack's own auth manager and secret."""
    out = subprocess.run(
        [sys.executable, "-c", MINT_TOKEN, username, role or ""],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return out.stdout.strip().splitlines()[-1]


@dataclass
class Api:
    base: str
    admin_token: str
    viewer_token: str
    norole_token: str

    def call(
        self, method: str, path: str, *, token: str | None = None, key: str | None = None, **kwargs: Any
    ) -> httpx.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if key:
            headers["X-API-Key"] = key
        return httpx.request(method, f"{self.base}{path}", headers=headers, timeout=60, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.call(method, path, token=self.admin_token, **kwargs)


@pytest.fixture(scope="session")
def api(stack) -> Iterator[Api]:
    info, client = stack
    from customer_pipelines.local.airflow import api_url

    yield Api(
        base=api_url(info.settings) + URL_PREFIX,
        admin_token=client.token(),
        viewer_token=mint_token(info.env, "ops_viewer", "VIEWER"),
        norole_token=mint_token(info.env, "nobody", None),
    )
