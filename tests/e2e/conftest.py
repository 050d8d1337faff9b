from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from customer_pipelines.api.app import URL_PREFIX
from tests_support import ZOMBIE_AFTER_SECONDS, free_port, running_stack, service_state_dir


@pytest.fixture(scope="session")
def stack() -> Iterator:
    """The embedded system as `make demo` starts it (emulator, embedded PostgreSQL, Airflow's
    scheduler, dag-processor, triggerer and API server, the syncer), on free ports, with a second
    emulator for the data plane."""
    from customer_pipelines.settings import Settings

    state = service_state_dir("cp-test-stack-")
    settings = Settings(
        state_dir=state,
        emulator_port=free_port(),
        emulator_grpc_port=free_port(),
        # The data plane on an emulator of its own, in a project of its own: the split production has.
        data_emulator_port=free_port(),
        data_emulator_grpc_port=free_port(),
        data_bq_project="e2e-data-project",
        airflow_port=free_port(),
        bq_project="e2e-project",
        # the tests sync when they change BigQuery; a periodic round must not race them
        sync_interval_seconds=3600,
    )
    # A dead worker is declared a zombie after 30 s instead of Airflow's 5 minutes (the zombie test).
    heartbeat = {
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(ZOMBIE_AFTER_SECONDS),
        # The API tests send hundreds of requests a minute as one admin; the limit itself is tested
        # on its own (tests/unit/api/test_app_wiring.py).
        "CP_API_RATE_LIMIT_PER_MINUTE": "100000",
    }
    with running_stack(settings, heartbeat) as running:
        yield running


# -- the REST API as Airflow's API server serves it on the e2e stack: callers of every kind --------

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
