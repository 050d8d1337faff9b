"""Run-state mirror on real Airflow for the paths where the operator's own code never runs."""

from __future__ import annotations

import time

import pytest

from customer_pipelines.local import emulator
from customer_pipelines.local.stack import run_module
from customer_pipelines.store import BigQueryStore
from tests_support import add_customer

pytestmark = pytest.mark.e2e


def _current(store: BigQueryStore, dag_id: str, run_id: str) -> dict | None:
    table = f"`{store.settings.bq_project}.{store.settings.bq_dataset}.pipeline_runs_current`"
    rows = store.client.query(f"SELECT * FROM {table} WHERE run_key = '{dag_id}/{run_id}'").result()
    found = [dict(r.items()) for r in rows]
    return found[0] if found else None


def _events(store: BigQueryStore, dag_id: str, run_id: str) -> list[dict]:
    return store.query("queries/runs_of_dag_run.sql", {"dag_id": dag_id, "run_id": run_id})


def _eventually(check, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(1)


def _wait_task_state(client, dag_id: str, run_id: str, state: str, timeout: float = 120) -> None:
    assert _eventually(lambda: client.task_instances(dag_id, run_id)[0]["state"] == state, timeout), (
        f"task of {dag_id}/{run_id} never reached {state}"
    )


def _mark_task(client, dag_id: str, run_id: str, state: str) -> None:
    client._request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/run_pipeline", {"new_state": state})


def test_a_task_marked_failed_by_a_person_is_mirrored_cancelled(stack):
    info, client = stack
    dag_id = "cust_acme_001.acme_gcp_cost_daily"
    client.wait_for_dags([dag_id], timeout=240)
    run = client.trigger(dag_id)
    client.wait_for_run(dag_id, run["dag_run_id"], timeout=240)
    store = BigQueryStore(info.settings)

    _mark_task(client, dag_id, run["dag_run_id"], "failed")

    current = _eventually(lambda: (c := _current(store, dag_id, run["dag_run_id"])) and c["state"] == "CANCELLED" and c)
    assert current, _events(store, dag_id, run["dag_run_id"])
    assert [e["source"] for e in _events(store, dag_id, run["dag_run_id"]) if e["state"] == "CANCELLED"] == [
        "listener:manual"
    ]


def test_a_dag_run_failed_before_its_task_ran_is_mirrored_cancelled(stack):
    info, client = stack
    [dag_id] = add_customer(info, "cust_stopped_001", "STARTER", [("stopped_cost", 5)])
    client.wait_for_dags([dag_id], timeout=240)
    client.set_pool_slots("cp_cust_stopped_001", 0)  # the task can never start
    run = client.trigger(dag_id)
    _wait_task_state(client, dag_id, run["dag_run_id"], "scheduled")

    client._request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run['dag_run_id']}", {"state": "failed"})

    store = BigQueryStore(info.settings)
    current = _eventually(lambda: (c := _current(store, dag_id, run["dag_run_id"])) and c["state"] == "CANCELLED" and c)
    states = [e["state"] for e in _events(store, dag_id, run["dag_run_id"])]
    assert current, states
    assert "SCHEDULED" in states and "RUNNING" not in states


def test_reconcile_fills_what_a_lost_spool_never_delivered(stack):
    info, client = stack
    [dag_id] = add_customer(info, "cust_lost_001", "STARTER", [("lost_cost", 5)])
    client.wait_for_dags([dag_id], timeout=240)
    client.set_pool_slots("cp_cust_lost_001", 0)
    run = client.trigger(dag_id)
    _wait_task_state(client, dag_id, run["dag_run_id"], "scheduled")
    store = BigQueryStore(info.settings)
    spool = info.settings.spool_dir

    emulator.stop_emulator(info.settings)  # BigQuery down: the listener can only spool
    try:
        _mark_task(client, dag_id, run["dag_run_id"], "success")
        assert _eventually(lambda: any(spool.glob("*.json")), 30), "the manual mark was not spooled"
        time.sleep(3)
        for path in spool.glob("*.json"):  # the worker's disk is lost with its spool
            path.unlink()
    finally:
        emulator.start(info.settings)
    assert (
        _current(store, dag_id, run["dag_run_id"]) is None
        or _current(store, dag_id, run["dag_run_id"])["state"] != "COMPLETED"
    )

    out = run_module(info.env, "reconcile", "--hours", "1")

    assert "missing transitions written" in out
    current = _current(store, dag_id, run["dag_run_id"])
    assert current is not None and current["state"] == "COMPLETED", out
    assert any(e["source"] == "reconciler" for e in _events(store, dag_id, run["dag_run_id"]))
    again = run_module(info.env, "reconcile", "--hours", "1")
    assert f"{dag_id}/{run['dag_run_id']}" not in again  # nothing written twice
