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
    from customer_pipelines.bigquery.store import BigQueryStore
    from customer_pipelines.local import emulator
    from customer_pipelines.settings import Settings

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
    from customer_pipelines.bigquery.store import BigQueryStore

    return BigQueryStore(emulator_settings)


@pytest.fixture
def data_store(emulator_settings):
    """The data plane's store (the templates' tables): the same emulator, unless configured apart."""
    from customer_pipelines.bigquery.store import BigQueryStore

    return BigQueryStore(emulator_settings, plane="data")


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A PostgreSQL server for the tests: CP_TEST_POSTGRES_URL when set, else the embedded server
    the project ships (one per test session, on a Unix socket in its own state directory, so no
    server of the machine is needed or touched), stopped and deleted afterwards."""
    external = os.environ.get("CP_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    from customer_pipelines.local import postgres
    from customer_pipelines.settings import Settings

    state = service_state_dir("cp-test-pg-")
    settings = Settings(state_dir=state, postgres_url=None)  # never the caller's CP_POSTGRES_URL
    try:
        yield postgres.start(settings)
    finally:
        postgres.stop(settings)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="session")
def quota_db_url(postgres_server_url: str) -> Iterator[str]:
    """A fresh database on the tests' PostgreSQL server, dropped afterwards."""
    import uuid

    import psycopg2
    from psycopg2 import sql

    from customer_pipelines.local.postgres import database_url

    name = f"cp_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(postgres_server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield database_url(postgres_server_url, name)
    with admin.cursor() as cur:
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    admin.close()
