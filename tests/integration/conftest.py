"""Fixtures of the integration tests that need Airflow's own records (not its running components)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg2
import pytest

from tests_support import service_state_dir


@dataclass(frozen=True)
class AirflowCli:
    """Airflow's CLI and the syncer on one fresh metadata database, against the test emulator: DAG
    files parsed by ``airflow dags reserialize`` (the DAG processor's work), a run executed in process
    by ``airflow dags test`` (the real task runner and operator), pools and pauses written by
    ``python -m customer_pipelines sync``. No scheduler runs."""

    settings: Any
    env: dict[str, str]
    metadata_db_url: str

    def airflow(self, *args: str) -> str:
        from customer_pipelines.local.airflow import run_cli

        return run_cli(self.env, *args)

    def customer_pipelines(self, *args: str) -> str:
        from customer_pipelines.local.stack import run_module

        return run_module(self.env, *args)

    def metadata(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of Airflow's metadata database (read-only use)."""
        with psycopg2.connect(self.metadata_db_url) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            rows = cur.fetchall()
        conn.close()
        return rows


@pytest.fixture(scope="module")
def airflow_cli(emulator_settings, postgres_server_url, quota_db_url) -> Iterator[AirflowCli]:
    """A fresh Airflow metadata database on the tests' PostgreSQL server (the embedded one unless
    CP_TEST_POSTGRES_URL is set: no server of the machine is needed)."""
    from customer_pipelines.local.airflow import airflow_env, migrate
    from customer_pipelines.local.postgres import database_url

    name = f"cp_test_airflow_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(postgres_server_url)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    url = database_url(postgres_server_url, name)
    state = service_state_dir("cp-test-airflow-cli-")
    settings = emulator_settings.model_copy(update={"state_dir": state, "quota_db_url": quota_db_url})
    env = airflow_env(settings, url)
    try:
        migrate(env)
        yield AirflowCli(settings, env, url)
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
        shutil.rmtree(state, ignore_errors=True)
