"""Pools, priority, customer status and subscriptions on real Airflow 3.3 (LocalExecutor, parallelism 8)."""

from __future__ import annotations

import itertools
import time
from datetime import UTC, datetime, timedelta

import pytest
from google.cloud import bigquery

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.local.stack import run_module
from customer_pipelines.seed import customer_rows
from customer_pipelines.snapshot import refresh_lock, refresh_snapshot
from tests_support import add_customer

pytestmark = pytest.mark.e2e


def _mirrored(store: BigQueryStore, run: dict) -> dict[str, dict]:
    events = store.query("queries/runs_of_dag_run.sql", {"dag_id": run["dag_id"], "run_id": run["dag_run_id"]})
    return {e["state"]: e for e in events}


def _wait_for_task_state(client, runs: list[dict], state: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [client.task_instances(r["dag_id"], r["dag_run_id"]) for r in runs]
        if all(tis and tis[0]["state"] == state for tis in states):
            return
        time.sleep(0.5)
    raise TimeoutError(f"task instances not all {state}: {[t[0]['state'] if t else None for t in states]}")


def test_pool_slots_follow_plan_changes_and_customer_status(stack):
    info, client = stack
    [dag_id] = add_customer(info, "cust_plan_001", "STARTER", [("plan_cost", 5)])
    client.wait_for_dags([dag_id], timeout=240)
    assert client.pool("cp_cust_plan_001")["slots"] == 2  # STARTER

    store = BigQueryStore(info.settings)
    _, upgrade = customer_rows("cust_plan_001", "cust_plan_001 Inc", "SCALE", now=datetime.now(UTC))
    upgrade.update(subscription_id="sub_cust_plan_001_scale", valid_from=datetime.now(UTC) - timedelta(seconds=5))
    store.load_rows("customer_subscriptions", [upgrade])
    run_module(info.env, "sync")
    assert client.pool("cp_cust_plan_001")["slots"] == 10  # SCALE takes over

    store.query("queries/set_customer_status.sql", {"customer_id": "cust_plan_001", "status": "SUSPENDED"})
    run_module(info.env, "sync")
    assert client.pool("cp_cust_plan_001")["slots"] == 0
    assert client.dag(dag_id)["is_paused"] is True

    store.query("queries/set_customer_status.sql", {"customer_id": "cust_plan_001", "status": "ACTIVE"})
    run_module(info.env, "sync")
    assert client.pool("cp_cust_plan_001")["slots"] == 10
    assert client.dag(dag_id)["is_paused"] is False  # turned runnable again: unpaused


def test_a_saturated_pool_queues_extra_runs_and_runs_them_one_at_a_time(stack):
    info, client = stack
    dag_ids = add_customer(
        info, "cust_one_slot_001", "STARTER", [(f"serial_{i}", 5) for i in range(3)], max_concurrent_runs=1
    )
    client.wait_for_dags(dag_ids, timeout=240)
    assert client.pool("cp_cust_one_slot_001")["slots"] == 1

    runs = [client.trigger(d) for d in dag_ids]
    finished = [client.wait_for_run(r["dag_id"], r["dag_run_id"], timeout=240) for r in runs]

    assert [f["state"] for f in finished] == ["success"] * 3  # held back by the pool, never failed
    store = BigQueryStore(info.settings)
    mirrored = [_mirrored(store, r) for r in runs]
    spans = sorted((m["RUNNING"]["started_at"], m["COMPLETED"]["ended_at"]) for m in mirrored)
    for (_, end), (next_start, _) in itertools.pairwise(spans):
        assert next_start >= end, f"runs overlapped in a one-slot pool: {spans}"


def test_with_one_slot_queued_runs_start_in_priority_order(stack):
    info, client = stack
    priorities = {"prio_low": 2, "prio_high": 9, "prio_mid": 5, "prio_upper": 7}
    dag_ids = add_customer(info, "cust_prio_001", "STARTER", list(priorities.items()), max_concurrent_runs=1)
    client.wait_for_dags(dag_ids, timeout=240)

    client.set_pool_slots("cp_cust_prio_001", 0)  # hold everything until all runs wait on the pool
    runs = [client.trigger(d) for d in dag_ids]
    _wait_for_task_state(client, runs, "scheduled")
    client.set_pool_slots("cp_cust_prio_001", 1)
    for r in runs:
        assert client.wait_for_run(r["dag_id"], r["dag_run_id"], timeout=240)["state"] == "success"

    store = BigQueryStore(info.settings)
    started = sorted(runs, key=lambda r: _mirrored(store, r)["RUNNING"]["started_at"])
    assert [r["dag_id"].split(".")[1] for r in started] == ["prio_high", "prio_upper", "prio_mid", "prio_low"]


def test_a_run_of_a_suspended_customer_is_skipped_customer_inactive(stack):
    info, client = stack
    [dag_id] = add_customer(info, "cust_suspend_001", "STARTER", [("suspended_cost", 5)])
    client.wait_for_dags([dag_id], timeout=240)
    store = BigQueryStore(info.settings)
    store.query("queries/set_customer_status.sql", {"customer_id": "cust_suspend_001", "status": "SUSPENDED"})
    # Only the snapshot has seen the suspension: the race between a snapshot written and its paused
    # flags set (a sync round or `snapshot refresh` sets them right after, so it is written directly).
    with refresh_lock(info.settings.snapshot_file):
        refresh_snapshot(store, info.settings.snapshot_file)

    run = client.trigger(dag_id)
    finished = client.wait_for_run(dag_id, run["dag_run_id"], timeout=240)

    assert finished["state"] == "success"
    assert client.task_instances(dag_id, run["dag_run_id"])[0]["state"] == "skipped"
    mirrored = _mirrored(store, run)
    assert set(mirrored) == {"SCHEDULED", "QUEUED", "SKIPPED"}  # the pipeline never ran
    assert mirrored["SKIPPED"]["skip_reason"] == "CUSTOMER_INACTIVE"


def _wait_for_doc(client, dag_id: str, text: str, timeout: float = 120) -> None:
    """Until the DAG processor has parsed the DAG again and its doc shows ``text``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in (client.dag_details(dag_id).get("doc_md") or ""):
            return
        time.sleep(2)
    raise TimeoutError(f"{dag_id}: doc_md never showed {text!r} (the DAG was not parsed again)")


def test_a_lapsed_subscription_pauses_the_dag_keeps_its_pool_and_its_queued_run_starts_once_renewed(stack):
    info, client = stack
    [dag_id] = add_customer(info, "cust_lapse_001", "STARTER", [("lapse_cost", 5)])
    client.wait_for_dags([dag_id], timeout=240)
    assert client.pool("cp_cust_lapse_001")["slots"] == 2

    store = BigQueryStore(info.settings)
    store.client.query(
        f"UPDATE `{store.project}.{store.dataset}.customer_subscriptions` SET valid_until = CURRENT_TIMESTAMP() "
        "WHERE customer_id = @customer_id",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("customer_id", "STRING", "cust_lapse_001")]
        ),
    ).result()
    run_module(info.env, "sync")
    assert client.dag(dag_id)["is_paused"] is True
    assert client.pool("cp_cust_lapse_001")["slots"] == 0
    _wait_for_doc(client, dag_id, "NO_SUBSCRIPTION")  # parsed again from the lapsed snapshot: still there
    assert client.dag(dag_id)["is_stale"] is False
    assert not any("no such customer" in e["stack_trace"] for e in client.import_errors())
    run = client.trigger(dag_id)  # waits: its DAG is paused

    _, renewal = customer_rows("cust_lapse_001", "cust_lapse_001 Inc", "STARTER", now=datetime.now(UTC))
    renewal.update(subscription_id="sub_cust_lapse_001_renewal", valid_from=datetime.now(UTC) - timedelta(seconds=1))
    store.load_rows("customer_subscriptions", [renewal])
    run_module(info.env, "sync")
    assert client.dag(dag_id)["is_paused"] is False
    assert client.pool("cp_cust_lapse_001")["slots"] == 2

    assert client.wait_for_run(dag_id, run["dag_run_id"], timeout=240)["state"] == "success"
    mirrored = _mirrored(store, run)
    assert {"RUNNING", "COMPLETED"} <= set(mirrored)
    assert "SKIPPED" not in mirrored
