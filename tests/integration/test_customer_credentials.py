"""Customers' credentials on Airflow's real task runner (``airflow dags test``, the emulator): with
``CP_CUSTOMER_CREDENTIALS=required`` a run resolves its customer's connection through Airflow's
secrets backends (here ``AIRFLOW_CONN_*``); without it the run fails at once, not retried, mirrored
FAILED naming the connection; with it the run succeeds; with the setting off nothing is looked up."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from datetime import UTC, datetime

import pytest

from customer_pipelines.seed import Dataset, config_row, customer_rows, load_dataset
from tests_support import mirrored_events

pytestmark = pytest.mark.integration

CUSTOMER = "cust_creds_001"
CONNECTION = "AIRFLOW_CONN_CP_CUST_CREDS_001_GCP"


@pytest.fixture(scope="module")
def dag_id(airflow_cli, emulator_settings) -> str:
    from customer_pipelines.bigquery.store import BigQueryStore

    now = datetime.now(UTC)
    customer, subscription = customer_rows(CUSTOMER, "Credentials Inc", "SCALE", now=now)
    config = {
        **config_row("creds_cost", CUSTOMER, "creds_cost", "GCP", "COST", "cost_billing", "0 2 * * *", "UTC", now=now),
        "sla_breach_threshold_minutes": None,  # dag.test() and deadline alerts, see test_held_runs.py
        "retry_config": {"max_attempts": 1},  # dag.test() would wait out a retry delay
    }
    load_dataset(
        BigQueryStore(emulator_settings), Dataset(customers=[customer], subscriptions=[subscription], configs=[config])
    )
    airflow_cli.customer_pipelines("sync")  # snapshot, pools, the quota ledger's tables
    return f"{CUSTOMER}.creds_cost"


def _run(cli, dag_id: str, **env: str) -> tuple[str, str]:
    """One run by ``airflow dags test`` with ``env`` added: (run_id, task state)."""
    before = {r[0] for r in cli.metadata("SELECT run_id FROM dag_run WHERE dag_id = %s", (dag_id,))}
    with_env = dataclasses.replace(cli, env={**{k: v for k, v in cli.env.items() if k != CONNECTION}, **env})
    with contextlib.suppress(RuntimeError):  # a failed task may end `dags test` non-zero: the state says
        with_env.airflow("dags", "test", dag_id)
    [(run_id, state)] = [
        r
        for r in cli.metadata("SELECT run_id, state FROM task_instance WHERE dag_id = %s", (dag_id,))
        if r[0] not in before
    ]
    return run_id, state


def test_a_run_without_its_customers_connection_fails_without_a_retry_naming_it(airflow_cli, dag_id, store):
    run_id, state = _run(airflow_cli, dag_id, CP_CUSTOMER_CREDENTIALS="required")
    assert state == "failed"
    [failed] = [e for e in mirrored_events(store, dag_id, run_id) if e["state"] == "FAILED"]
    assert "cp_cust_creds_001_gcp" in failed["error_message"], failed
    assert failed["error_type"] == "PIPELINE"
    details = json.loads(failed["details"]) if isinstance(failed["details"], str) else failed["details"]
    assert details["retryable"] is False
    assert [e["state"] for e in mirrored_events(store, dag_id, run_id)].count("RETRYING") == 0


def test_a_run_with_its_customers_connection_in_a_secrets_backend_succeeds(airflow_cli, dag_id, store):
    connection = json.dumps({"conn_type": "google_cloud_platform", "extra": {"project": "e2e-customer"}})
    run_id, state = _run(airflow_cli, dag_id, CP_CUSTOMER_CREDENTIALS="required", **{CONNECTION: connection})
    assert state == "success"
    assert "COMPLETED" in [e["state"] for e in mirrored_events(store, dag_id, run_id)]


def test_with_credentials_off_a_run_needs_no_connection(airflow_cli, dag_id, store):
    run_id, state = _run(airflow_cli, dag_id, CP_CUSTOMER_CREDENTIALS="off")
    assert state == "success"
    assert "COMPLETED" in [e["state"] for e in mirrored_events(store, dag_id, run_id)]
