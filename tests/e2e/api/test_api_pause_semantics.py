"""What pausing and resuming a config through the API means on the real stack: no new runs, a run
already in flight finishes (Airflow's DAG pause would freeze it: apache/airflow#71381), and the DAG
is paused once nothing of it runs."""

from __future__ import annotations

import os
import signal
import time

import pytest

from customer_pipelines.local.emulator import DATA_NAME
from customer_pipelines.local.processes import read_pid
from customer_pipelines.local.stack import run_module
from tests_support import config_body, onboard

pytestmark = pytest.mark.e2e


def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_a_config_paused_while_its_run_is_in_flight_lets_the_run_finish_then_its_dag_is_paused(stack, api):
    info, client = stack
    onboard(api, "cust_inflight")
    created = api.admin("POST", "/customers/cust_inflight/configs", json=config_body("slow_cost"))
    dag_id = created.json()["dag_id"]
    client.wait_for_dags([dag_id], timeout=120)
    # The data plane's BigQuery stops answering: the run's pipeline query waits, its task running.
    data_emulator = read_pid(info.settings.state_dir / "run" / f"{DATA_NAME}.pid")
    assert data_emulator is not None
    os.kill(data_emulator, signal.SIGSTOP)
    try:
        run = api.admin("POST", "/customers/cust_inflight/configs/slow_cost/runs")
        assert run.status_code == 201, run.text
        run_id = run.json()["run_id"]
        _until(
            lambda: any(t["state"] == "running" for t in client.task_instances(dag_id, run_id)),
            120,
            "the run's task running",
        )
        paused = api.admin("POST", "/customers/cust_inflight/configs/slow_cost/pause")
        assert paused.status_code == 200 and paused.json()["is_active"] is False, paused.text
        assert paused.json()["paused"] == []  # deferred: a task of it runs
        assert client.dag(dag_id)["is_paused"] is False
    finally:
        os.kill(data_emulator, signal.SIGCONT)
    finished = client.wait_for_run(dag_id, run_id, timeout=180)
    assert finished["state"] == "success"  # the run in flight finished, not frozen by a pause
    run_module(info.env, "sync")  # the next round: nothing of it runs any more
    assert client.dag(dag_id)["is_paused"] is True
    enabled = api.admin("POST", "/customers/cust_inflight/configs/slow_cost/enable")
    assert enabled.json()["unpaused"] == [dag_id]
    assert client.dag(dag_id)["is_paused"] is False


def test_pause_all_and_resume_all_change_every_config_of_the_customer_and_nothing_else(stack, api):
    _, client = stack
    onboard(api, "cust_all")
    onboard(api, "cust_all_other")
    for config_id in ("a_cost", "b_cost"):
        assert api.admin("POST", "/customers/cust_all/configs", json=config_body(config_id)).status_code == 201
    assert api.admin("POST", "/customers/cust_all_other/configs", json=config_body("a_cost")).status_code == 201
    client.wait_for_dags(["cust_all.a_cost", "cust_all.b_cost", "cust_all_other.a_cost"], timeout=120)
    paused = api.admin("POST", "/customers/cust_all/pause-all").json()
    assert sorted(paused["changed"]) == ["a_cost", "b_cost"] and paused["failed"] == []
    assert client.dag("cust_all.a_cost")["is_paused"] and client.dag("cust_all.b_cost")["is_paused"]
    assert client.dag("cust_all_other.a_cost")["is_paused"] is False
    assert api.admin("POST", "/customers/cust_all/pause-all").json()["changed"] == []  # nothing left to change
    resumed = api.admin("POST", "/customers/cust_all/resume-all").json()
    assert sorted(resumed["changed"]) == ["a_cost", "b_cost"]
    assert client.dag("cust_all.a_cost")["is_paused"] is False


def test_a_rotated_key_replaces_the_old_one_which_stops_working_at_once(api):
    first = onboard(api, "cust_rotate")
    old_key, old_id = first["api_key"], first["api_keys"][0]["key_id"]
    assert api.call("GET", "/customers/cust_rotate/configs", key=old_key).status_code == 200
    rotated = api.admin("POST", f"/customers/cust_rotate/api-keys/{old_id}/rotate")
    assert rotated.status_code == 201 and rotated.json()["replaces"] == old_id
    assert api.call("GET", "/customers/cust_rotate/configs", key=old_key).status_code == 401
    assert api.call("GET", "/customers/cust_rotate/configs", key=rotated.json()["api_key"]).status_code == 200
    customer = api.admin("GET", "/customers/cust_rotate").json()
    assert [k["key_id"] for k in customer["api_keys"]] == [rotated.json()["key_id"]]
    assert "api_key" not in customer and "key_hash" not in str(customer)


def test_a_run_triggered_through_the_api_runs_and_shows_in_usage(stack, api):
    _, client = stack
    onboard(api, "cust_trigger")
    created = api.admin("POST", "/customers/cust_trigger/configs", json=config_body("t_cost"))
    dag_id = created.json()["dag_id"]
    client.wait_for_dags([dag_id], timeout=120)
    run = api.admin("POST", "/customers/cust_trigger/configs/t_cost/runs", headers={"Idempotency-Key": "t-1"})
    assert run.status_code == 201, run.text
    again = api.admin("POST", "/customers/cust_trigger/configs/t_cost/runs", headers={"Idempotency-Key": "t-1"})
    assert again.json()["run_id"] == run.json()["run_id"]  # a retried trigger makes no second run
    assert client.wait_for_run(dag_id, run.json()["run_id"], timeout=180)["state"] == "success"
    assert api.admin("GET", "/customers/cust_trigger/usage").json()["today"]["used"] == 1
    assert len(client.dag_runs(dag_id)) == 1
    run_id = run.json()["run_id"]

    def mirrored() -> list[dict]:
        return api.admin("GET", "/customers/cust_trigger/configs/t_cost/runs").json()["items"]

    _until(lambda: any(r["run_id"] == run_id and r["state"] == "COMPLETED" for r in mirrored()), 60, "the mirror")
    completed = api.admin("GET", "/customers/cust_trigger/runs", params={"state": "COMPLETED"}).json()["items"]
    assert [r["run_id"] for r in completed] == [run_id]
