"""A split configuration on two emulators: the control plane (configs, mirror, views) on one, the
customers' data (what the templates read and write) on the other, in a project of its own."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import bigquery

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.seed import demo_dataset, load_dataset
from customer_pipelines.settings import Settings
from tests_support import free_port, service_state_dir

pytestmark = pytest.mark.integration

DATA_TABLES = {
    "billing_export",
    "cost_daily",
    "security_findings",
    "security_audit_daily",
    "compliance_controls",
    "compliance_daily",
    "observability_usage",
    "observability_daily",
}


@pytest.fixture(scope="module")
def split_settings() -> Iterator[Settings]:
    """Two fresh emulators, started as the local stack starts them, with the schema applied."""
    from customer_pipelines.local import emulator

    state = service_state_dir("cp-test-bq-split-")
    control_port, data_port = free_port(), free_port()
    settings = Settings(
        state_dir=state,
        emulator_port=control_port,
        emulator_grpc_port=free_port(),
        bigquery_emulator_host=f"127.0.0.1:{control_port}",
        bq_project="control-project",
        data_emulator_port=data_port,
        data_emulator_grpc_port=free_port(),
        data_bigquery_emulator_host=f"127.0.0.1:{data_port}",
        data_bq_project="customer-data-project",
    )
    try:
        emulator.start(settings)
        emulator.start(settings, plane="data")
        BigQueryStore(settings).apply_schema()
        yield settings
    finally:
        emulator.stop_emulator(settings, plane="data")
        emulator.stop_emulator(settings)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture
def control(split_settings) -> BigQueryStore:
    return BigQueryStore(split_settings)


@pytest.fixture
def data(split_settings) -> BigQueryStore:
    return BigQueryStore(split_settings, plane="data")


def _datasets(store: BigQueryStore, project: str) -> set[str]:
    return {d.dataset_id for d in store.client.list_datasets(project=project)}


def _tables(store: BigQueryStore, dataset: str) -> set[str]:
    return {t.table_id for t in store.client.list_tables(dataset)}


def _layout(control: BigQueryStore, data: BigQueryStore) -> dict[str, object]:
    """What each emulator holds, in both projects."""
    settings = control.settings
    control_dataset = f"{settings.bq_project}.{settings.bq_dataset}"
    data_dataset = f"{settings.data_plane_project}.{settings.bq_data_dataset}"
    return {
        "control emulator, control project": _datasets(control, settings.bq_project),
        "control emulator, data project": _datasets(control, settings.data_plane_project),
        "data emulator, control project": _datasets(data, settings.bq_project),
        "data emulator, data project": _datasets(data, settings.data_plane_project),
        "control tables": _tables(control, control_dataset),
        "data tables": _tables(data, data_dataset),
    }


def _count(store: BigQueryStore, table: str, customer_id: str) -> int:
    rows = store.client.query(
        f"SELECT COUNT(*) AS n FROM `{store.table_id(table)}` WHERE customer_id = @customer_id",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("customer_id", "STRING", customer_id)]
        ),
    ).result()
    return next(iter(rows))["n"]


def test_the_schema_puts_control_tables_and_views_on_the_control_plane_and_data_tables_on_the_data_plane(control, data):
    layout = _layout(control, data)

    assert layout["control emulator, control project"] == {"customers_metadata"}
    assert layout["control emulator, data project"] == set()
    assert layout["data emulator, control project"] == set()
    assert layout["data emulator, data project"] == {"customer_pipeline_data"}
    assert layout["data tables"] == DATA_TABLES
    assert {"customers", "customer_pipeline_configs", "scheduled_pipeline_runs", "pipeline_runs_current"} <= layout[
        "control tables"
    ]
    assert not layout["control tables"] & DATA_TABLES

    control.apply_schema()  # applying again changes nothing, on either plane
    assert _layout(control, data) == layout


def test_seeding_puts_customers_on_the_control_plane_and_their_data_on_the_data_plane(control, data):
    demo = demo_dataset()
    for _ in range(2):  # seeding twice gives the same rows on both planes
        load_dataset(control, demo)

        assert {c["customer_id"] for c in control.fetch_customers()} == {"cust_acme_001", "cust_globex_001"}
        assert len(control.fetch_configs()) == len(demo.configs)
        for table, rows in (
            ("billing_export", demo.billing),
            ("security_findings", demo.findings),
            ("compliance_controls", demo.controls),
            ("observability_usage", demo.usage),
        ):
            expected = sum(1 for r in rows if r["customer_id"] == "cust_acme_001")
            assert _count(data, table, "cust_acme_001") == expected > 0, table
    assert not _tables(control, f"{control.settings.bq_project}.{control.settings.bq_dataset}") & DATA_TABLES


def test_a_template_run_on_the_data_plane_store_writes_its_output_on_the_data_plane(control, data):
    load_dataset(control, demo_dataset())
    run_key = f"split/{datetime.now(UTC):%H%M%S%f}"

    summary = data.query(
        "templates/cost_billing.sql",
        {
            "customer_id": "cust_acme_001",
            "provider": "GCP",
            "run_date": datetime.now(UTC).date() - timedelta(days=2),
            "run_key": run_key,
            "currency": "USD",
            "lookback_days": 1,
        },
    )

    assert summary[0]["rows_written"] == 3  # one row per service
    written = data.client.query(
        f"SELECT service FROM `{data.table_id('cost_daily')}` WHERE run_key = @run_key",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("run_key", "STRING", run_key)]
        ),
    ).result()
    assert len(list(written)) == 3
    assert _layout(control, data)["control emulator, data project"] == set()  # nothing written on the control plane
    assert "cost_daily" not in _tables(control, f"{control.settings.bq_project}.{control.settings.bq_dataset}")
