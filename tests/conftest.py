"""Shared fixtures: real services on loopback, each in its own state directory and free ports."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from tests_support import free_port, service_state_dir

# Airflow reads its configuration at import time: keep tests away from any ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="cp-test-airflow-home-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


@pytest.fixture(scope="session")
def emulator_settings() -> Iterator:
    """A fresh persistent BigQuery emulator with the project's schema applied."""
    from customer_pipelines.local import emulator
    from customer_pipelines.settings import Settings
    from customer_pipelines.store import BigQueryStore

    state = service_state_dir("cp-test-bq-")
    port = free_port()
    settings = Settings(
        state_dir=state,
        emulator_port=port,
        emulator_grpc_port=free_port(),
        bigquery_emulator_host=f"127.0.0.1:{port}",
        bq_project="test-project",
    )
    emulator.start(settings)
    BigQueryStore(settings).apply_schema()
    yield settings
    emulator.stop_emulator(settings)
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def store(emulator_settings):
    from customer_pipelines.store import BigQueryStore

    return BigQueryStore(emulator_settings)


@pytest.fixture
def data_store(emulator_settings):
    """The data plane's store (the templates' tables): the same emulator, unless configured apart."""
    from customer_pipelines.store import BigQueryStore

    return BigQueryStore(emulator_settings, plane="data")


@pytest.fixture(scope="session")
def quota_db_url() -> Iterator[str]:
    """A fresh database on the machine's PostgreSQL (CP_TEST_POSTGRES_URL), dropped afterwards."""
    import uuid

    import psycopg2

    server = os.environ.get("CP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    name = f"cp_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    yield server.rsplit("/", 1)[0] + f"/{name}"
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()
