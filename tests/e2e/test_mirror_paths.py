"""Run-state mirror on real Airflow for the paths where the operator's own code never runs."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from customer_pipelines.bigquery.store import INSERT_DEADLINE_SECONDS, BigQueryStore
from customer_pipelines.local import emulator
from customer_pipelines.local.stack import run_module
from tests_support import ZOMBIE_AFTER_SECONDS, add_customer, eventually, held_quota_gate, mirrored_events, task_process

pytestmark = pytest.mark.e2e


def _current(store: BigQueryStore, dag_id: str, run_id: str) -> dict | None:
    table = f"`{store.settings.bq_project}.{store.settings.bq_dataset}.pipeline_runs_current`"
    rows = store.client.query(f"SELECT * FROM {table} WHERE run_key = '{dag_id}/{run_id}'").result()
    found = [dict(r.items()) for r in rows]
    return found[0] if found else None


def _wait_task_state(client, dag_id: str, run_id: str, state: str, timeout: float = 120) -> None:
    assert eventually(lambda: client.task_instances(dag_id, run_id)[0]["state"] == state, timeout), (
        f"task of {dag_id}/{run_id} never reached {state}: {client.task_instances(dag_id, run_id)}"
    )


def _mark_task(client, dag_id: str, run_id: str, state: str) -> None:
    client.set_task_state(dag_id, run_id, "run_pipeline", state)


def test_a_task_marked_failed_by_a_person_is_mirrored_cancelled(stack):
    info, client = stack
    dag_id = "cust_acme_001.acme_gcp_cost_daily"
    client.wait_for_dags([dag_id], timeout=240)
    run = client.trigger(dag_id)
    client.wait_for_run(dag_id, run["dag_run_id"], timeout=240)
    store = BigQueryStore(info.settings)

    _mark_task(client, dag_id, run["dag_run_id"], "failed")

    current = eventually(lambda: (c := _current(store, dag_id, run["dag_run_id"])) and c["state"] == "CANCELLED" and c)
    assert current, mirrored_events(store, dag_id, run["dag_run_id"])
    assert [
        (e["source"], e["error_type"])
        for e in mirrored_events(store, dag_id, run["dag_run_id"])
        if e["state"] == "CANCELLED"
    ] == [("listener:manual", "MANUAL")]


def test_a_dag_run_failed_before_its_task_ran_is_mirrored_cancelled(stack):
    info, client = stack
    [dag_id] = add_customer(info, "cust_stopped_001", "STARTER", [("stopped_cost", 5)])
    client.wait_for_dags([dag_id], timeout=240)
    client.set_pool_slots("cp_cust_stopped_001", 0)  # the task can never start
    run = client.trigger(dag_id)
    _wait_task_state(client, dag_id, run["dag_run_id"], "scheduled")

    client.set_dag_run_state(dag_id, run["dag_run_id"], "failed")

    store = BigQueryStore(info.settings)
    current = eventually(lambda: (c := _current(store, dag_id, run["dag_run_id"])) and c["state"] == "CANCELLED" and c)
    states = [e["state"] for e in mirrored_events(store, dag_id, run["dag_run_id"])]
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
        assert eventually(lambda: any(spool.glob("*.json")), 30), "the manual mark was not spooled"
        # The listener's background delivery holds the event and retries for INSERT_DEADLINE_SECONDS: once
        # BigQuery is back it would still deliver it, so it must have given up before the restart.
        time.sleep(INSERT_DEADLINE_SECONDS + 3)
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
    events = mirrored_events(store, dag_id, run["dag_run_id"])
    assert any(e["source"] == "reconciler" for e in events)
    # marked by hand while it waited for a slot: set_state gave it a start_date, no worker ran it
    assert "RUNNING" not in [e["state"] for e in events], events
    again = run_module(info.env, "reconcile", "--hours", "1")
    assert f"{dag_id}/{run['dag_run_id']}" not in again  # nothing written twice


def _running_task_pid(client, dag_id: str, run_id: str) -> int:
    """The process of the run's task, once Airflow says it is running."""
    _wait_task_state(client, dag_id, run_id, "running")
    ti = client.task_instances(dag_id, run_id)[0]
    pid = eventually(lambda: task_process(ti["id"]), 30)
    assert pid, f"no process titled 'airflow worker -- {ti['id']}'"
    return pid


def test_a_worker_killed_mid_run_is_mirrored_from_airflows_record(stack):
    info, client = stack
    [dag_id] = add_customer(info, "cust_kill_001", "STARTER", [("killed_cost", 5)])
    client.wait_for_dags([dag_id], timeout=240)
    with held_quota_gate(info, "cust_kill_001"):  # the task stays inside execute until it is killed
        run = client.trigger(dag_id)
        os.kill(_running_task_pid(client, dag_id, run["dag_run_id"]), signal.SIGKILL)
    assert eventually(
        lambda: client.task_instances(dag_id, run["dag_run_id"])[0]["state"] in ("up_for_retry", "failed"), 120
    )

    store = BigQueryStore(info.settings)

    def ended() -> list[dict]:
        return [
            e
            for e in mirrored_events(store, dag_id, run["dag_run_id"])
            if e["try_number"] == 1 and e["state"] in ("RETRYING", "FAILED")
        ]

    if not eventually(ended, 20):
        run_module(info.env, "reconcile", "--hours", "1")  # the fallback every sync round runs
    mirrored = ended()
    assert len(mirrored) == 1, mirrored_events(store, dag_id, run["dag_run_id"])
    assert mirrored[0]["state"] == "RETRYING"  # retries are configured: the kill is a failed try, not the end


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_run_past_its_execution_timeout_is_mirrored_timeout(stack):
    info, client = stack
    [dag_id] = add_customer(
        info,
        "cust_timeout_001",
        "STARTER",
        [("timeout_cost", 5)],
        config_fields={
            "max_execution_duration_minutes": 1,
            "retry_config": {"max_attempts": 1, "base_delay_minutes": 1, "backoff_multiplier": 2},
        },
    )
    client.wait_for_dags([dag_id], timeout=240)
    with held_quota_gate(info, "cust_timeout_001"):
        run = client.trigger(dag_id)
        # Airflow's SIGALRM interrupts the wait at the gate after the 1-minute execution_timeout.
        _wait_task_state(client, dag_id, run["dag_run_id"], "failed", timeout=240)

    store = BigQueryStore(info.settings)
    current = eventually(lambda: (c := _current(store, dag_id, run["dag_run_id"])) and c["state"] == "TIMEOUT" and c)
    events = mirrored_events(store, dag_id, run["dag_run_id"])
    assert current, events
    # It timed out waiting for the quota ledger, before the pipeline started: the platform's failure.
    assert current["error_type"] == "PLATFORM" and current["try_number"] == 1
    ends = [e for e in events if e["state"] in ("TIMEOUT", "FAILED", "RETRYING", "COMPLETED")]
    assert [(e["state"], e["source"]) for e in ends] == [("TIMEOUT", "operator")]
    assert "RUNNING" not in [e["state"] for e in events]  # it never got past the gate
    # ...and the scheduler, whose listener saw the DAG run fail, goes on: the run ends failed.
    assert client.wait_for_run(dag_id, run["dag_run_id"], timeout=120)["state"] == "failed"


def test_a_zombie_task_is_mirrored_from_the_schedulers_heartbeat_timeout(stack):
    info, client = stack
    [dag_id] = add_customer(info, "cust_zombie_001", "STARTER", [("zombie_cost", 5)])
    client.wait_for_dags([dag_id], timeout=240)
    with held_quota_gate(info, "cust_zombie_001"):
        run = client.trigger(dag_id)
        task_pid = _running_task_pid(client, dag_id, run["dag_run_id"])
        # Freeze the task and its supervisor: no heartbeat reaches Airflow, nothing exits.
        stopped = [_parent(task_pid), task_pid]
        try:
            for pid in stopped:
                os.kill(pid, signal.SIGSTOP)
            assert eventually(
                lambda: client.task_instances(dag_id, run["dag_run_id"])[0]["state"] in ("up_for_retry", "failed"),
                ZOMBIE_AFTER_SECONDS + 120,
            ), "the scheduler never declared the silent task a zombie"
        finally:
            for pid in reversed(stopped):  # the supervisor wakes, learns the try is over and ends the task
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            eventually(lambda: not Path(f"/proc/{task_pid}").exists(), 60)

    store = BigQueryStore(info.settings)

    def ended() -> list[dict]:
        return [
            e
            for e in mirrored_events(store, dag_id, run["dag_run_id"])
            if e["try_number"] == 1 and e["state"] in ("RETRYING", "FAILED", "COMPLETED")
        ]

    mirrored = eventually(ended, 30)
    assert [(e["state"], e["source"]) for e in mirrored] == [("RETRYING", "listener:scheduler")], mirrored_events(
        store, dag_id, run["dag_run_id"]
    )


def test_a_run_past_its_sla_is_reported_by_airflows_deadline_alert(stack):
    info, client = stack
    [dag_id] = add_customer(
        info, "cust_sla_001", "STARTER", [("slow_cost", 5)], config_fields={"sla_breach_threshold_minutes": 1}
    )
    client.wait_for_dags([dag_id], timeout=240)
    store = BigQueryStore(info.settings)
    table = f"`{info.settings.bq_project}.{info.settings.bq_dataset}.sla_breaches`"
    with held_quota_gate(info, "cust_sla_001"):  # keeps the run busy past its 1-minute SLA
        run = client.trigger(dag_id)

        def alerted() -> list[dict]:
            rows = store.client.query(f"SELECT * FROM {table} WHERE run_id = '{run['dag_run_id']}'").result()
            return [dict(r.items()) for r in rows if r["alerted_at"] is not None]

        breaches = eventually(alerted, 240)
    assert breaches, "no SLA breach recorded by the deadline alert"
    assert breaches[0]["sla_breach_threshold_minutes"] == 1
    assert client.wait_for_run(dag_id, run["dag_run_id"], timeout=240)["state"] == "success"


ENDINGS = ("COMPLETED", "FAILED", "RETRYING", "SKIPPED", "TIMEOUT", "CANCELLED")


def _view(store: BigQueryStore, name: str, where: str) -> list[dict]:
    table = f"`{store.settings.bq_project}.{store.settings.bq_dataset}.{name}`"
    return [dict(r.items()) for r in store.client.query(f"SELECT * FROM {table} WHERE {where}").result()]


def _retrying_customer(info, client, customer_id: str, config_id: str, retry_delay_minutes: float) -> str:
    [dag_id] = add_customer(
        info,
        customer_id,
        "STARTER",
        [(config_id, 5)],
        config_fields={
            "retry_config": {"max_attempts": 2, "base_delay_minutes": retry_delay_minutes, "backoff_multiplier": 1}
        },
    )
    client.wait_for_dags([dag_id], timeout=240)
    return dag_id


def _killed_run(info, client, customer_id: str, dag_id: str, before_kill=lambda: None) -> str:
    """A run whose first try is killed (SIGKILL) inside execute; returns its run id once Airflow has
    the try up_for_retry."""
    with held_quota_gate(info, customer_id):
        run = client.trigger(dag_id)
        pid = _running_task_pid(client, dag_id, run["dag_run_id"])
        before_kill()
        os.kill(pid, signal.SIGKILL)
    _wait_task_state(client, dag_id, run["dag_run_id"], "up_for_retry")
    return run["dag_run_id"]


def test_a_quota_skipped_run_reconciled_counts_no_usage(stack):
    info, client = stack
    customer_id = "cust_recon_quota_001"
    [dag_id] = add_customer(info, customer_id, "STARTER", [("recon_quota_cost", 5)], daily_run_limit=1)
    client.wait_for_dags([dag_id], timeout=240)
    ran = client.trigger(dag_id)
    _wait_task_state(client, dag_id, ran["dag_run_id"], "success", timeout=240)
    refused = client.trigger(dag_id)
    _wait_task_state(client, dag_id, refused["dag_run_id"], "skipped", timeout=240)
    [ti] = client.task_instances(dag_id, refused["dag_run_id"])
    assert ti["state"] == "skipped" and ti["start_date"], ti  # a worker started it, the quota gate refused it

    out = run_module(info.env, "reconcile", "--hours", "1")

    store = BigQueryStore(info.settings)
    [usage] = _view(store, "customer_usage", f"customer_id = '{customer_id}'")
    assert (usage["runs_today"], usage["runs_this_month"], usage["skipped_quota_today"]) == (1, 1, 1), out
    current = _current(store, dag_id, refused["dag_run_id"])
    assert (current["state"], current["skip_reason"], current["started_at"]) == ("SKIPPED", "QUOTA_EXCEEDED", None)


def test_a_retry_waiting_for_a_slot_keeps_its_own_start_after_reconcile(stack):
    info, client = stack
    customer_id = "cust_recon_retry_001"
    dag_id = _retrying_customer(info, client, customer_id, "recon_retry_cost", retry_delay_minutes=0.25)
    pool = f"cp_{customer_id}"
    # no slot for the retry: Airflow schedules it (try 2) and it waits there
    run_id = _killed_run(info, client, customer_id, dag_id, before_kill=lambda: client.set_pool_slots(pool, 0))
    assert eventually(
        lambda: (ti := client.task_instances(dag_id, run_id)[0])["try_number"] == 2 and ti["state"] == "scheduled",
        120,
    ), client.task_instances(dag_id, run_id)
    [waiting] = client.task_instances(dag_id, run_id)
    assert waiting["start_date"], waiting  # the scheduled retry still carries try 1's start_date

    out = run_module(info.env, "reconcile", "--hours", "1")

    client.set_pool_slots(pool, 2)
    assert client.wait_for_run(dag_id, run_id, timeout=240)["state"] == "success"
    [ti] = client.task_instances(dag_id, run_id)
    assert ti["try_number"] == 2
    started = datetime.fromisoformat(ti["start_date"])
    store = BigQueryStore(info.settings)
    running = [e for e in mirrored_events(store, dag_id, run_id) if e["state"] == "RUNNING" and e["try_number"] == 2]
    assert [e["source"] for e in running] == ["operator"], (out, running)
    assert abs((running[0]["started_at"] - started).total_seconds()) < 1, (running, ti)


def test_reconcile_of_a_try_waiting_for_its_retry_writes_retrying_only(stack):
    info, client = stack
    customer_id = "cust_recon_wait_001"
    dag_id = _retrying_customer(info, client, customer_id, "recon_wait_cost", retry_delay_minutes=60)
    from customer_pipelines.local import airflow as local_airflow
    from customer_pipelines.local.processes import stop

    spool = info.settings.spool_dir
    emulator.stop_emulator(info.settings)  # BigQuery down: the scheduler's listener can only spool RETRYING
    try:
        run_id = _killed_run(info, client, customer_id, dag_id)
        time.sleep(INSERT_DEADLINE_SECONDS + 3)  # the listener's background delivery gives up
        # The scheduler's machine is lost with its disk: neither its spool nor a delivery it may
        # still retry in memory (a slow machine starts it late) ever reaches BigQuery.
        assert stop("airflow-scheduler", info.settings.state_dir / "run")
        for path in spool.glob("*.json"):
            path.unlink()
    finally:
        emulator.start(info.settings)
        local_airflow.start(info.settings, info.env, components=("scheduler",))

    out = run_module(info.env, "reconcile", "--hours", "1")

    store = BigQueryStore(info.settings)
    endings = [(e["state"], e["source"]) for e in mirrored_events(store, dag_id, run_id) if e["state"] in ENDINGS]
    assert endings == [("RETRYING", "reconciler")], out
    assert _current(store, dag_id, run_id)["state"] == "RETRYING"
    [status] = _view(store, "pipeline_configs_status", "config_id = 'recon_wait_cost'")
    assert status["consecutive_failures"] == 0
    assert client.task_instances(dag_id, run_id)[0]["state"] == "up_for_retry"


def test_a_dag_run_marked_success_while_its_task_waits_for_a_retry_ends_skipped_after_reconcile(stack):
    info, client = stack
    customer_id = "cust_recon_mark_001"
    dag_id = _retrying_customer(info, client, customer_id, "recon_mark_cost", retry_delay_minutes=60)
    run_id = _killed_run(info, client, customer_id, dag_id)
    store = BigQueryStore(info.settings)
    assert eventually(lambda: (c := _current(store, dag_id, run_id)) and c["state"] == "RETRYING", 30)

    client.set_dag_run_state(dag_id, run_id, "success")  # Airflow skips the waiting task, no task listener runs
    _wait_task_state(client, dag_id, run_id, "skipped")
    out = run_module(info.env, "reconcile", "--hours", "1")

    current = _current(store, dag_id, run_id)
    assert (current["state"], current["try_number"]) == ("SKIPPED", 1), out
    assert _view(store, "currently_running_pipelines", f"run_id = '{run_id}'") == []
    [usage] = _view(store, "customer_usage", f"customer_id = '{customer_id}'")
    assert usage["running_now"] == 0


MARKED = {"success": "COMPLETED", "failed": "CANCELLED"}
"""A person's mark as the mirror shows it (a mark to failed is a cancellation, MANUAL)."""


def _marks_follow_airflow(client, store: BigQueryStore, dag_id: str, run_id: str, marks: list[str]) -> None:
    """Mark the try as a person would, and after each mark wait for the mirror's current state to be
    Airflow's."""
    for mark in marks:
        _mark_task(client, dag_id, run_id, mark)
        assert client.task_instances(dag_id, run_id)[0]["state"] == mark
        current = eventually(lambda m=mark: (c := _current(store, dag_id, run_id)) and c["state"] == MARKED[m] and c)
        assert current, (mark, mirrored_events(store, dag_id, run_id))
        assert current["try_number"] == 1


def test_repeated_marks_of_one_try_leave_the_mirror_in_airflows_state_after_each_mark(stack):
    info, client = stack
    [dag_id] = add_customer(info, "cust_marks_001", "STARTER", [("marked_cost", 5)])
    client.wait_for_dags([dag_id], timeout=240)
    store = BigQueryStore(info.settings)

    # completed -> marked failed -> marked success again
    done = client.trigger(dag_id)
    assert client.wait_for_run(dag_id, done["dag_run_id"], timeout=240)["state"] == "success"
    _marks_follow_airflow(client, store, dag_id, done["dag_run_id"], ["failed", "success"])

    # failed by the operator -> marked success -> marked failed
    data_store = store.for_plane("data")
    # The template's target table is gone: BigQuery answers 404, which no retry can fix.
    data_store.client.query(f"DROP TABLE `{data_store.table_id('cost_daily')}`").result()
    try:
        failed = client.trigger(dag_id)
        assert client.wait_for_run(dag_id, failed["dag_run_id"], timeout=240)["state"] == "failed"
    finally:
        run_module(info.env, "schema", "apply")  # puts the table back for the other tests
    assert eventually(lambda: (c := _current(store, dag_id, failed["dag_run_id"])) and c["state"] == "FAILED")
    _marks_follow_airflow(client, store, dag_id, failed["dag_run_id"], ["success", "failed"])
    marks = [e for e in mirrored_events(store, dag_id, failed["dag_run_id"]) if e["source"] == "listener:manual"]
    assert [e["state"] for e in marks] == ["COMPLETED", "CANCELLED"]  # each mark its own event, in order


def test_a_cleared_run_shows_its_new_queued_and_running_and_is_timed_on_its_new_execution(stack):
    info, client = stack
    customer_id = "cust_cleared_001"
    [dag_id] = add_customer(info, customer_id, "STARTER", [("cleared_cost", 5)])
    client.wait_for_dags([dag_id], timeout=240)
    store = BigQueryStore(info.settings)
    run = client.trigger(dag_id)
    run_id = run["dag_run_id"]
    assert client.wait_for_run(dag_id, run_id, timeout=240)["state"] == "success"
    first = eventually(lambda: (c := _current(store, dag_id, run_id)) and c["state"] == "COMPLETED" and c)
    assert first and first["clear_number"] == 0

    with held_quota_gate(info, customer_id):  # the new try waits at the quota gate: queued for the mirror
        cleared_at = datetime.now(UTC)
        client.clear_run(dag_id, run_id)
        _wait_task_state(client, dag_id, run_id, "running")
        current = eventually(lambda: (c := _current(store, dag_id, run_id)) and c["state"] == "QUEUED" and c)
        assert current, mirrored_events(store, dag_id, run_id)
        assert (current["clear_number"], current["started_at"]) == (1, None)
        running = _view(store, "currently_running_pipelines", f"run_key = '{dag_id}/{run_id}'")
        assert [r["state"] for r in running] == ["QUEUED"]
    assert client.wait_for_run(dag_id, run_id, timeout=240)["state"] == "success"

    current = _current(store, dag_id, run_id)
    assert (current["state"], current["clear_number"], current["try_number"]) == ("COMPLETED", 1, 2)
    assert current["started_at"] >= cleared_at  # its own start, not the first execution's
    assert current["ended_at"] - current["started_at"] < timedelta(minutes=5)
    second = [e["state"] for e in mirrored_events(store, dag_id, run_id) if e["clear_number"] == 1]
    assert second == ["SCHEDULED", "QUEUED", "RUNNING", "COMPLETED"]
