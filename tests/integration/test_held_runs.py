"""Runs that must not start (models.hold_reason) on the emulator and Airflow's own records: a
customer whose subscription lapses keeps its DAGs and pool and runs again once renewed; a disabled
or deleted config's run is SKIPPED with CONFIG_INACTIVE, even when the change reaches the snapshot
after the run was queued. The DAG files are parsed by ``airflow dags reserialize``, pools and pauses
written by the syncer, runs executed by ``airflow dags test`` (the real task runner; no scheduler)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
from google.cloud import bigquery

from customer_pipelines.seed import Dataset, config_row, customer_rows, load_dataset

pytestmark = pytest.mark.integration

DRIVER = Path(__file__).with_name("dag_test_with_pre_execute.py")


def _config(config_id: str, customer_id: str, now: datetime, **fields) -> dict:
    row = config_row(config_id, customer_id, config_id, "GCP", "COST", "cost_billing", "0 2 * * *", "UTC", now=now)
    # No SLA: Airflow 3.3's dag.test() fails after the task on a DAG with a deadline alert (it
    # passes the alert's definition where the database expects its id); the scheduler has no such issue.
    return {**row, "sla_breach_threshold_minutes": None, **fields}


def _dml(store, sql: str, **params: str) -> None:
    """A change an operator (or the product API) makes in BigQuery; the names are the test's own."""
    job = bigquery.QueryJobConfig(
        query_parameters=[bigquery.ScalarQueryParameter(k, "STRING", v) for k, v in params.items()]
    )
    store.client.query(sql.replace("$dataset", f"{store.project}.{store.dataset}"), job_config=job).result()


def _dag(cli, dag_id: str) -> dict | None:
    rows = cli.metadata("SELECT is_paused, is_stale FROM dag WHERE dag_id = %s", (dag_id,))
    return {"is_paused": rows[0][0], "is_stale": rows[0][1]} if rows else None


def _pool(cli, customer_id: str) -> dict | None:
    rows = cli.metadata("SELECT slots, description FROM slot_pool WHERE pool = %s", (f"cp_{customer_id}",))
    return {"slots": rows[0][0], "description": rows[0][1]} if rows else None


def _import_errors(cli) -> str:
    return "\n".join(r[0] for r in cli.metadata("SELECT stacktrace FROM import_error"))


def _test_run(cli, dag_id: str, *, before_execute: str | None = None) -> tuple[str, str]:
    """One run of the DAG by ``airflow dags test``, or by the driver that changes the snapshot right
    before the task executes (``before_execute``: its action): (run_id, task state)."""
    before = {r[0] for r in cli.metadata("SELECT run_id FROM dag_run WHERE dag_id = %s", (dag_id,))}
    if before_execute:
        proc = subprocess.run(
            [sys.executable, str(DRIVER), dag_id, before_execute],
            env=cli.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-4000:]
    else:
        cli.airflow("dags", "test", dag_id)
    [(run_id, state)] = [
        r
        for r in cli.metadata("SELECT run_id, state FROM task_instance WHERE dag_id = %s", (dag_id,))
        if r[0] not in before
    ]
    return run_id, state


def _mirrored(store, dag_id: str, run_id: str) -> dict[str, dict]:
    events = store.query("queries/runs_of_dag_run.sql", {"dag_id": dag_id, "run_id": run_id})
    return {e["state"]: {**e, "details": _json(e["details"])} for e in events}


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


def _reserved(quota_db_url: str, dag_id: str, run_id: str) -> bool:
    with psycopg2.connect(quota_db_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM cp_quota_reservations WHERE run_key = %s", (f"{dag_id}/{run_id}",))
        found = cur.fetchone() is not None
    conn.close()
    return found


def test_a_lapsed_subscription_keeps_dags_and_pool_and_runs_resume_when_renewed(store, airflow_cli, quota_db_url):
    cli, now = airflow_cli, datetime.now(UTC)
    customer, in_force = customer_rows("cust_lapse_001", "Lapse Inc", "STARTER", now=now)
    # Awkward rows: an old expired plan, a renewal booked to start next month (not in force yet), and a
    # customer that never had a subscription (the LEFT JOIN gives it NULL plan and limits).
    expired = {
        **in_force,
        "subscription_id": "sub_lapse_old",
        "plan": "SCALE",
        "valid_from": now - timedelta(days=800),
        "valid_until": now - timedelta(days=365),
    }
    future = {**in_force, "subscription_id": "sub_lapse_future", "valid_from": now + timedelta(days=30)}
    never, _ = customer_rows("cust_nosub_001", "Never Subscribed Ltd", "STARTER", now=now)
    load_dataset(
        store,
        Dataset(
            customers=[customer, never],
            subscriptions=[expired, in_force, future],
            configs=[_config("lapse_cost", "cust_lapse_001", now), _config("nosub_cost", "cust_nosub_001", now)],
        ),
    )
    dag_id, never_dag_id = "cust_lapse_001.lapse_cost", "cust_nosub_001.nosub_cost"
    cli.customer_pipelines("sync")  # snapshot and pools
    cli.airflow("dags", "reserialize")  # the DAG processor's parse: the DAGs, paused or not on creation
    assert _dag(cli, dag_id) == {"is_paused": False, "is_stale": False}
    assert _pool(cli, "cust_lapse_001")["slots"] == 2

    # The subscription ends (a renewal arriving late is ordinary).
    _dml(
        store,
        "UPDATE `$dataset.customer_subscriptions` SET valid_until = CURRENT_TIMESTAMP() WHERE subscription_id = @id",
        id=in_force["subscription_id"],
    )
    cli.customer_pipelines("sync")
    # A run that starts anyway (queued before the pause, or triggered by hand) is skipped with the
    # reason; `dags test` parses the DAG files first, as the DAG processor does every few seconds.
    run_id, state = _test_run(cli, dag_id)
    assert _dag(cli, dag_id) == {"is_paused": True, "is_stale": False}
    assert _pool(cli, "cust_lapse_001") == {"slots": 0, "description": "Lapse Inc (no subscription, ACTIVE)"}
    assert "no such customer" not in _import_errors(cli)
    assert state == "skipped"
    mirrored = _mirrored(store, dag_id, run_id)
    assert mirrored["SKIPPED"]["skip_reason"] == "NO_SUBSCRIPTION"
    assert not {"RUNNING", "COMPLETED", "FAILED"} & set(mirrored)
    assert not _reserved(quota_db_url, dag_id, run_id)  # no quota unit taken

    # Renewed: a new subscription row in force from now.
    renewal = {
        **in_force,
        "subscription_id": "sub_lapse_renewal",
        "valid_from": datetime.now(UTC) - timedelta(seconds=1),
    }
    store.load_rows("customer_subscriptions", [renewal])
    cli.customer_pipelines("sync")
    assert _dag(cli, dag_id) == {"is_paused": False, "is_stale": False}
    assert _pool(cli, "cust_lapse_001")["slots"] == 2
    run_id, state = _test_run(cli, dag_id)
    assert state == "success"
    assert {"RUNNING", "COMPLETED"} <= set(_mirrored(store, dag_id, run_id))

    # The customer that never had a subscription has been there all along: its DAG paused, its pool empty.
    assert _dag(cli, never_dag_id) == {"is_paused": True, "is_stale": False}
    assert _pool(cli, "cust_nosub_001") == {"slots": 0, "description": "Never Subscribed Ltd (no subscription, ACTIVE)"}


def test_a_disabled_or_deleted_config_is_skipped_config_inactive_when_its_run_starts(store, airflow_cli, quota_db_url):
    cli, now = airflow_cli, datetime.now(UTC)
    customer, subscription = customer_rows("cust_cfg_001", "Config States Inc", "STARTER", now=now)
    configs = [
        _config("cfg_disabled", "cust_cfg_001", now, is_active=False),
        # Awkward row: every optional column NULL (JSON columns included).
        _config(
            "cfg_deleted",
            "cust_cfg_001",
            now,
            display_name=None,
            parameters=None,
            retry_config=None,
            max_execution_duration_minutes=None,
        ),
    ]
    load_dataset(store, Dataset(customers=[customer], subscriptions=[subscription], configs=configs))
    cli.customer_pipelines("snapshot", "refresh")

    # Disabled in BigQuery and in the snapshot, the customer active: the run must not do the work.
    disabled = "cust_cfg_001.cfg_disabled"
    run_id, state = _test_run(cli, disabled)
    assert state == "skipped"
    mirrored = _mirrored(store, disabled, run_id)
    assert mirrored["SKIPPED"]["skip_reason"] == "CONFIG_INACTIVE"
    assert mirrored["SKIPPED"]["details"]["config_state"] == "INACTIVE"
    assert not {"RUNNING", "COMPLETED", "FAILED"} & set(mirrored)
    assert not _reserved(quota_db_url, disabled, run_id)

    # Deleted after its DAG was parsed: the snapshot refreshed between the worker's parse and the run.
    deleted = "cust_cfg_001.cfg_deleted"
    # The configs table is a version log: deleting appends a version with deleted_at set.
    deleted_at = datetime.now(UTC)
    store.load_rows(
        "customer_pipeline_configs",
        [{**configs[1], "version": 2, "deleted_at": deleted_at, "updated_at": deleted_at, "updated_by": "test"}],
    )
    run_id, state = _test_run(cli, deleted, before_execute="refresh-snapshot")
    assert state == "skipped"
    mirrored = _mirrored(store, deleted, run_id)
    assert mirrored["SKIPPED"]["skip_reason"] == "CONFIG_INACTIVE"
    assert mirrored["SKIPPED"]["details"]["config_state"] == "DELETED"
    assert not {"RUNNING", "COMPLETED", "FAILED"} & set(mirrored)
    assert not _reserved(quota_db_url, deleted, run_id)


def test_a_run_that_finds_no_readable_snapshot_when_it_starts_is_mirrored_failed(store, airflow_cli):
    cli, now = airflow_cli, datetime.now(UTC)
    customer, subscription = customer_rows("cust_nosnap_001", "No Snapshot Inc", "STARTER", now=now)
    # One attempt: dag.test() would otherwise wait out the retry delay.
    config = _config("nosnap_cost", "cust_nosnap_001", now, retry_config={"max_attempts": 1})
    load_dataset(store, Dataset(customers=[customer], subscriptions=[subscription], configs=[config]))
    cli.customer_pipelines("snapshot", "refresh")

    dag_id = "cust_nosnap_001.nosnap_cost"
    try:
        run_id, state = _test_run(cli, dag_id, before_execute="remove-snapshot")
    finally:
        cli.customer_pipelines("snapshot", "refresh")
    assert state == "failed"
    mirrored = _mirrored(store, dag_id, run_id)
    assert "no readable config snapshot" in mirrored["FAILED"]["error_message"]  # mirrored, not lost
    assert mirrored["FAILED"]["error_type"] == "PLATFORM"  # ours, never counted toward the customer's auto-pause
    assert "RUNNING" not in mirrored
