"""Missed runs and backfills on real Airflow (scheduler, API server, emulator): every tick of a day
accounted for, ticks lost while the scheduler was stopped found and backfilled exactly once, a
backfill beyond the daily quota, and a cancelled backfill that strands nothing."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests_support import config_body, onboard

pytestmark = pytest.mark.e2e


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _wait(what: str, check: Any, timeout: float, interval: float = 3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(interval)
    raise TimeoutError(f"{what} within {timeout:.0f}s")


def _table(ticks: list[dict[str, Any]]) -> str:
    """The ticks one a line, for a failure's message."""
    return "\n".join(f"{t['tick']} {t['outcome']:8s} {t['reason'] or '-':16s} {t['run_id'] or '-'}" for t in ticks)


def _runs(client: Any, dag_id: str) -> list[dict[str, Any]]:
    return client.dag_runs(dag_id)


def _finished_scheduled_after(client: Any, dag_id: str, moment: datetime) -> list[dict[str, Any]]:
    return [
        r
        for r in _runs(client, dag_id)
        if r["run_type"] == "scheduled" and r["state"] in ("success", "failed") and _at(r["logical_date"]) > moment
    ]


def _wait_backfill_done(api: Any, customer_id: str, backfill_id: int, timeout: float = 300) -> dict[str, Any]:
    def done() -> Any:
        status = api.admin("GET", f"/customers/{customer_id}/backfills/{backfill_id}").json()
        return status if status["completed_at"] else None

    return _wait(f"backfill {backfill_id} completed", done, timeout)


def _customer_with_config(
    api: Any, client: Any, customer_id: str, config_id: str, cron: str, plan: str = "SCALE", **limits: Any
) -> tuple[str, dict[str, Any]]:
    """A new customer with one config on ``cron``, its DAG parsed: (dag_id, the onboarding answer)."""
    onboarded = onboard(api, customer_id, plan, **limits)
    created = api.admin("POST", f"/customers/{customer_id}/configs", json=config_body(config_id, schedule_cron=cron))
    assert created.status_code == 201, created.text
    dag_id = f"{customer_id}.{config_id}"
    client.wait_for_dags([dag_id], timeout=240)
    return dag_id, onboarded


def test_every_tick_of_a_config_gets_its_outcome_and_ticks_lost_while_the_scheduler_was_stopped_are_backfilled_once(
    api, stack
):
    from customer_pipelines.local import airflow as local_airflow
    from customer_pipelines.local.processes import stop

    info, client = stack
    customer_id, config_id = "cust_ticks_001", "every_minute"
    dag_id, _ = _customer_with_config(api, client, customer_id, config_id, "* * * * *")
    began = datetime.now(UTC)
    base = f"/customers/{customer_id}/configs/{config_id}"

    # 1. a tick that ran
    _wait(
        "a scheduled run finished", lambda: _finished_scheduled_after(client, dag_id, began - timedelta(minutes=2)), 240
    )

    # 2. a tick skipped for quota: today's limit set to what is used, then restored
    used = api.admin("GET", f"/customers/{customer_id}/usage").json()["today"]["used"]
    assert (
        api.admin("PUT", f"/customers/{customer_id}/plan", json={"plan": "SCALE", "daily_run_limit": used}).status_code
        == 200
    )
    mark = datetime.now(UTC)
    _wait("a run skipped for quota", lambda: _finished_scheduled_after(client, dag_id, mark), 180)
    assert (
        api.admin("PUT", f"/customers/{customer_id}/plan", json={"plan": "SCALE", "daily_run_limit": 1000}).status_code
        == 200
    )

    # 3. a tick while the config is paused
    assert api.admin("POST", f"{base}/pause").status_code == 200
    time.sleep(75)
    assert api.admin("POST", f"{base}/enable").status_code == 200
    resumed = datetime.now(UTC)
    _wait("a run after the pause", lambda: _finished_scheduled_after(client, dag_id, resumed), 180)

    # 4. ticks while the scheduler is stopped
    run_dir = info.settings.state_dir / "run"
    stop_called = datetime.now(UTC)
    assert stop("airflow-scheduler", run_dir)
    # Three ticks or more with no scheduler. Once back, it runs the tick that was next when it
    # stopped (Airflow keeps it in the DAG's next_dagrun) and then the newest due one (catchup is
    # off): the ticks between are the ones lost.
    time.sleep(200)
    local_airflow.start(info.settings, info.env, components=("scheduler",))
    restarted = datetime.now(UTC)
    _wait(
        "a run after the restart",
        lambda: _finished_scheduled_after(client, dag_id, restarted - timedelta(seconds=59)),
        240,
    )

    since = (began - timedelta(minutes=3)).isoformat()
    history = api.admin("GET", f"{base}/ticks", params={"since": since}).json()
    ticks = history["ticks"]
    outcomes = Counter((t["outcome"], t["reason"]) for t in ticks)
    assert outcomes[("ran", None)] >= 2, _table(ticks)
    assert outcomes[("skipped", "QUOTA_EXCEEDED")] >= 1, _table(ticks)
    assert outcomes[("skipped", "CONFIG_PAUSED")] >= 1, _table(ticks)
    assert outcomes[("missed", "NO_RUN")] == 0, _table(ticks)  # nothing unexplained
    missed = [_at(t["tick"]) for t in ticks if t["outcome"] == "missed"]
    assert {t["reason"] for t in ticks if t["outcome"] == "missed"} == {"SCHEDULER_DOWN"}
    # exactly the outage's minutes that have no run: after the last run made before the stop was
    # asked for, up to the newest run once the scheduler was back; counted here from Airflow's runs
    # and the clock, not from the tick history
    run_ticks = {_at(r["logical_date"]) for r in _runs(client, dag_id)}
    newest = max(run_ticks)
    minute = max(t for t in run_ticks if t < stop_called) + timedelta(minutes=1)
    outage_ticks = []
    while minute < newest:
        if minute not in run_ticks:
            outage_ticks.append(minute)
        minute += timedelta(minutes=1)
    assert missed == outage_ticks and missed, _table(ticks)

    # The operators' fleet report counts them under the customer (Airflow's records alone).
    fleet = api.admin("GET", "/fleet/missed-runs", params={"since": since}).json()
    [entry] = [c for c in fleet["customers"] if c["customer_id"] == customer_id]
    assert entry["causes"] == {"SCHEDULER_DOWN": len(missed)}, fleet

    body = {"config_ids": [config_id], "from": missed[0].isoformat(), "to": missed[-1].isoformat()}
    dry = api.admin("POST", f"/customers/{customer_id}/backfills", json={**body, "dry_run": True}).json()
    assert [_at(t) for t in dry["configs"][0]["ticks"]] == missed and dry["configs"][0]["backfill_id"] is None
    made = api.admin("POST", f"/customers/{customer_id}/backfills", json=body)
    assert made.status_code == 201, made.text
    backfill_id = made.json()["configs"][0]["backfill_id"]
    status = _wait_backfill_done(api, customer_id, backfill_id)
    assert status["runs"] == {"success": len(missed)}
    backfilled = [r for r in _runs(client, dag_id) if r["run_type"] == "backfill"]
    assert sorted(_at(r["logical_date"]) for r in backfilled) == missed

    def mirrored() -> Any:
        rows = api.admin("GET", f"{base}/runs", params={"since": since, "limit": 500}).json()["items"]
        flagged = {r["run_id"] for r in rows if r["run_type"] == "backfill" and r["state"] == "COMPLETED"}
        return flagged if flagged == {r["dag_run_id"] for r in backfilled} else None

    _wait("the backfilled runs mirrored with the backfill flag", mirrored, 120)

    again = api.admin("POST", f"/customers/{customer_id}/backfills", json=body)
    assert again.status_code == 409 and "nothing to backfill" in again.json()["detail"]
    assert len([r for r in _runs(client, dag_id) if r["run_type"] == "backfill"]) == len(missed)
    after = api.admin("GET", f"{base}/ticks", params={"since": since}).json()["ticks"]
    assert not [t for t in after if t["outcome"] == "missed"]
    api.admin("POST", f"{base}/pause")  # the rest of the suite does not need a run a minute


def _hours_ago(hours: int) -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)


def test_a_backfill_beyond_the_daily_quota_runs_up_to_it_and_skips_the_rest_for_quota(api, stack):
    _info, client = stack
    customer_id, config_id = "cust_bf_quota", "hourly"
    dag_id, onboarded = _customer_with_config(
        api, client, customer_id, config_id, "0 * * * *", "STARTER", daily_run_limit=2, max_concurrent_runs=2
    )
    key = onboarded["api_key"]
    body = {"from": _hours_ago(5).isoformat(), "to": _hours_ago(2).isoformat()}

    dry = api.call("POST", f"/customers/{customer_id}/backfills", key=key, json={**body, "dry_run": True})
    assert dry.status_code == 201, dry.text  # the customer's own key may plan and create backfills
    exempt = api.call(
        "POST", f"/customers/{customer_id}/backfills", key=key, json={**body, "count_against_quota": False}
    )
    assert exempt.status_code == 403 and "count_against_quota" in exempt.json()["detail"]  # only an operator
    # The dry run says it: 4 runs, 2 units left today, so 2 will skip with QUOTA_EXCEEDED.
    assert (dry.json()["runs"], dry.json()["quota_remaining_today"], dry.json()["runs_over_quota"]) == (4, 2, 2)
    made = api.admin("POST", f"/customers/{customer_id}/backfills", json=body).json()
    status = _wait_backfill_done(api, customer_id, made["configs"][0]["backfill_id"])
    assert status["runs"] == {"success": 4}  # a quota skip is not a failure
    runs = [r for r in _runs(client, dag_id) if r["run_type"] == "backfill"]
    states = Counter(client.task_instances(dag_id, r["dag_run_id"])[0]["state"] for r in runs)
    assert states == {"success": 2, "skipped": 2}

    def mirrored() -> Any:
        rows = api.admin("GET", f"/customers/{customer_id}/runs", params={"since": _hours_ago(6).isoformat()}).json()
        found = Counter((r["state"], r["skip_reason"], r["run_type"]) for r in rows["items"])
        return found if sum(found.values()) == 4 else None

    found = _wait("the backfill mirrored", mirrored, 120)
    assert found == {("COMPLETED", None, "backfill"): 2, ("SKIPPED", "QUOTA_EXCEEDED", "backfill"): 2}


def test_cancelling_a_backfill_leaves_none_of_its_runs_queued_or_running_and_the_pause_flag_as_it_was(api, stack):
    _info, client = stack
    customer_id, config_id = "cust_bf_cancel", "hourly"
    dag_id, _ = _customer_with_config(api, client, customer_id, config_id, "0 * * * *")
    paused_before = client.dag(dag_id)["is_paused"]
    body = {"from": _hours_ago(12).isoformat(), "to": _hours_ago(1).isoformat()}
    made = api.admin("POST", f"/customers/{customer_id}/backfills", json=body).json()
    backfill_id = made["configs"][0]["backfill_id"]
    assert made["runs"] == 12
    _wait(
        "a backfill run started",
        lambda: [r for r in _runs(client, dag_id) if r["run_type"] == "backfill" and r["state"] != "queued"],
        120,
        interval=1,
    )
    cancelled = api.admin("POST", f"/customers/{customer_id}/backfills/{backfill_id}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["completed_at"] is not None

    def settled() -> Any:
        runs = [r for r in _runs(client, dag_id) if r["run_type"] == "backfill"]
        live = [r for r in runs if r["state"] in ("queued", "running")]
        tasks = [
            t
            for r in runs
            for t in client.task_instances(dag_id, r["dag_run_id"])
            if t["state"] in ("queued", "running", "scheduled", "up_for_retry")
        ]
        return runs if runs and not live and not tasks else None

    runs = _wait("no backfill run queued or running", settled, 60)
    assert len(runs) == 12
    assert client.dag(dag_id)["is_paused"] == paused_before
    again = api.admin("POST", f"/customers/{customer_id}/backfills/{backfill_id}/cancel")
    assert again.status_code == 409
    # Another customer's caller cannot see it (tenant isolation): 404, not 403.
    assert api.admin("GET", f"/customers/cust_bf_quota/backfills/{backfill_id}").status_code == 404
