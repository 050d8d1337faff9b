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
