"""Fixtures of the unit tests: no BigQuery, no PostgreSQL, no Airflow components; only the package,
SQLite snapshots under pytest's tmp_path and Airflow's DAG classes."""

from __future__ import annotations

import os

# Airflow reads its configuration when it is first imported: keep it away from any ~/airflow. The
# root conftest may have set these already (setdefault keeps its values).
os.environ.setdefault("AIRFLOW_HOME", "/tmp/cp-unit-airflow-home")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from customer_pipelines.seed import snapshot_customer_rows

PARSING_CONTEXT_VARS = ("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "_AIRFLOW_PARSING_CONTEXT_TASK_ID")

DEMO_DAG_IDS = frozenset(
    {
        "cust_acme_001.acme_gcp_cost_daily",
        "cust_acme_001.acme_gcp_security_weekly",
        "cust_globex_001.globex_aws_cost_daily",
        "cust_globex_001.globex_azure_compliance_monthly",
    }
)


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No CP_* variable of the caller's shell and no parsing context leaks into a test, and the
    lru_cached settings are rebuilt from the test's own environment."""
    from customer_pipelines.settings import get_settings

    for name in list(os.environ):
        if name.startswith("CP_") or name == "BIGQUERY_EMULATOR_HOST" or name in PARSING_CONTEXT_VARS:
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def split_settings(tmp_path: Path) -> Any:
    """The control and data planes apart: each its own project, dataset, connection and emulator."""
    from customer_pipelines.settings import Settings

    return Settings(
        state_dir=tmp_path,
        bq_project="control-proj",
        bq_dataset="meta_ds",
        bigquery_emulator_host="127.0.0.1:9050",
        data_gcp_conn_id="acme_data",
        data_bq_project="acme-data",
        bq_data_dataset="data_ds",
        data_bigquery_emulator_host="127.0.0.1:9051",
    )


@pytest.fixture(scope="session")
def customer_rows_of() -> Callable[[Any], list[dict[str, Any]]]:
    """snapshot_customer_rows, for tests that build datasets of their own."""
    return snapshot_customer_rows


@pytest.fixture
def demo_dag_ids() -> frozenset[str]:
    return DEMO_DAG_IDS


@pytest.fixture
def demo_dataset() -> Any:
    from customer_pipelines import seed

    return seed.demo_dataset()


@pytest.fixture
def demo_customers(demo_dataset: Any) -> list[dict[str, Any]]:
    return snapshot_customer_rows(demo_dataset)


@pytest.fixture
def demo_configs(demo_dataset: Any) -> list[dict[str, Any]]:
    return [dict(row) for row in demo_dataset.configs]


@pytest.fixture
def settings(tmp_path: Path) -> Any:
    from customer_pipelines.settings import Settings

    return Settings(state_dir=tmp_path / "state", pool_prefix="cp_", max_retry_delay_minutes=60)


WriteSnapshot = Callable[..., Path]


@pytest.fixture
def write_snap(tmp_path: Path) -> WriteSnapshot:
    """write_snap(customers, configs, path=None, source="test") -> path of a fresh snapshot."""
    from customer_pipelines import snapshot

    def write(
        customers: Sequence[Mapping[str, Any]],
        configs: Sequence[Mapping[str, Any]],
        path: Path | None = None,
        source: str = "test",
    ) -> Path:
        return snapshot.write_snapshot(path or tmp_path / "configs.sqlite", customers, configs, source=source)

    return write


@pytest.fixture
def demo_snapshot_path(write_snap: WriteSnapshot, demo_customers: list, demo_configs: list) -> Path:
    return write_snap(demo_customers, demo_configs)


@pytest.fixture
def fleet_snapshot_rows() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A synthetic fleet of 40 customers (~200 configs) as snapshot rows; every seventh customer's
    subscription lapsed yesterday and the last customer never had one (the LEFT JOIN's NULL rows)."""
    from customer_pipelines import seed

    data = seed.fleet_dataset(40, seed=3)
    yesterday = datetime.now(UTC) - timedelta(days=1)
    data.subscriptions = [
        {**s, "valid_until": yesterday} if i % 7 == 0 else s for i, s in enumerate(data.subscriptions[:-1])
    ]
    return snapshot_customer_rows(data), [dict(row) for row in data.configs]
