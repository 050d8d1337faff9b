"""The control plane's BigQuery (the run-state mirror) down while a pipeline runs: the run does its
work on the data plane, succeeds, and its transitions arrive in the mirror once BigQuery is back."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from google.cloud import bigquery

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.local import emulator
from customer_pipelines.local.stack import run_module
from customer_pipelines.seed import Dataset, load_dataset
from tests_support import add_customer

pytestmark = pytest.mark.e2e

CUSTOMER_ID = "cust_outage_001"
SERVICES = ("BigQuery", "Cloud Storage")


def _billing_rows(customer_id: str) -> list[dict]:
    """One line per service and day around today, so whichever day the run processes has data."""
    today = datetime.now(UTC).date()
    return [
        {
            "customer_id": customer_id,
            "provider": "GCP",
            "usage_date": today + timedelta(days=offset),
            "service": service,
            "sku": f"{service.lower().replace(' ', '-')}-0",
            "cost": Decimal("12.50"),
            "currency": "USD",
        }
        for offset in range(-3, 2)
        for service in SERVICES
    ]


def _rows(store: BigQueryStore, sql: str, **params: str) -> list[dict]:
    parameters = [bigquery.ScalarQueryParameter(name, "STRING", value) for name, value in params.items()]
    result = store.client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=parameters)).result()
    return [dict(row.items()) for row in result]


def _current(store: BigQueryStore, run_key: str) -> dict | None:
    sql = f"SELECT * FROM `{store.table_id('pipeline_runs_current')}` WHERE run_key = @run_key"
    found = _rows(store, sql, run_key=run_key)
    return found[0] if found else None


def _events(store: BigQueryStore, dag_id: str, run_id: str) -> list[dict]:
    return store.query("queries/runs_of_dag_run.sql", {"dag_id": dag_id, "run_id": run_id})


def test_a_run_while_the_mirrors_bigquery_is_down_succeeds_and_is_mirrored_once_it_is_back(stack):
    info, client = stack
    [dag_id] = add_customer(info, CUSTOMER_ID, "STARTER", [("outage_cost", 5)])
    data_plane = BigQueryStore(info.settings, plane="data")
    load_dataset(data_plane, Dataset(billing=_billing_rows(CUSTOMER_ID)))
    client.wait_for_dags([dag_id], timeout=240)
    spool = info.settings.spool_dir

    emulator.stop_emulator(info.settings)  # the control plane only: the data plane's emulator runs on
    try:
        run = client.trigger(dag_id)
        finished = client.wait_for_run(dag_id, run["dag_run_id"], timeout=300)
        spooled = [json.loads(path.read_text()) for path in spool.glob("*.json")]
    finally:
        emulator.start(info.settings)

    assert finished["state"] == "success"
    run_key = f"{dag_id}/{run['dag_run_id']}"
    # The operator spools only what it could not write: its transitions prove the mirror was down.
    assert {"RUNNING", "COMPLETED"} <= {e["state"] for e in spooled if e["run_id"] == run["dag_run_id"]}, spooled
    cost_daily = data_plane.table_id("cost_daily")
    written = _rows(data_plane, f"SELECT service FROM `{cost_daily}` WHERE run_key = @run_key", run_key=run_key)
    assert sorted(r["service"] for r in written) == sorted(SERVICES)

    run_module(info.env, "sync")  # each round drains the spool

    assert not any(spool.glob("*.json"))
    control = BigQueryStore(info.settings)
    current = _current(control, run_key)
    assert current is not None and current["state"] == "COMPLETED", current
    events = _events(control, dag_id, run["dag_run_id"])
    states = Counter(e["state"] for e in events)
    assert {state: states[state] for state in ("SCHEDULED", "QUEUED", "RUNNING", "COMPLETED")} == {
        "SCHEDULED": 1,
        "QUEUED": 1,
        "RUNNING": 1,
        "COMPLETED": 1,
    }, events
    assert len({e["event_key"] for e in events}) == len(events)
