"""The API's behaviour through Airflow's real API server: configs, validation, versions,
idempotency, pause semantics in Airflow, quota, runs, usage, customers and keys."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

import pytest

from customer_pipelines.models import dag_id_for
from tests_support import config_body, onboard

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def customer(api):
    return onboard(api, "cust_contract")


def _wait(predicate, timeout: float, step: float = 0.2) -> float:
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        if predicate():
            return time.monotonic() - began
        time.sleep(step)
    raise AssertionError(f"not within {timeout} s")


def test_openapi_document_is_served_and_lists_every_route(api):
    spec = api.call("GET", "/openapi.json").json()
    assert "/customers/{customer_id}/configs" in spec["paths"]
    assert "/fleet/status" in spec["paths"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"schedule_cron": "61 * * * *"}, "schedule_cron"),
        ({"schedule_cron": "@reboot"}, "schedule_cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"pipeline_template": "no_such_template"}, "pipeline_template"),
        ({"provider": "OPENAI", "domain": "SECURITY", "pipeline_template": "security_audit"}, "pipeline_template"),
        ({"provider": "IBM"}, "provider"),
        ({"priority": 11}, "priority"),
        ({"priority": 0}, "priority"),
        ({"parameters": {"currency": "usd"}}, "parameters"),
        ({"parameters": {"unknown": 1}}, "parameters"),
        ({"retry_config": {"max_attempts": 99}}, "retry_config.max_attempts"),
        ({"sla_breach_threshold_minutes": 0}, "sla_breach_threshold_minutes"),
        ({"max_execution_duration_minutes": 100000}, "max_execution_duration_minutes"),
        ({"config_id": "bad id!"}, "config_id"),
        ({"start_window_minutes": -1}, "start_window_minutes"),
        ({"start_window_minutes": 721}, "start_window_minutes"),
        ({"schedule_cron": "*/10 * * * *", "start_window_minutes": 10}, "start_window_minutes"),
        ({"surprise": True}, "surprise"),
    ],
)
def test_an_invalid_config_is_refused_with_422_naming_the_field_and_nothing_is_written(api, customer, fields, field):
    body = {**config_body("invalid_cfg"), **fields}
    response = api.admin("POST", "/customers/cust_contract/configs", json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == 422
    assert any(e["field"].startswith(field) for e in problem["errors"]), problem
    assert api.admin("GET", "/customers/cust_contract/configs/invalid_cfg").status_code == 404


def test_config_lifecycle_create_get_list_patch_version_conflict_delete(api, customer):
    created = api.admin("POST", "/customers/cust_contract/configs", json=config_body("life_cfg", priority=7))
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 1 and created.json()["dag_id"] == dag_id_for("cust_contract", "life_cfg")
    got = api.admin("GET", "/customers/cust_contract/configs/life_cfg").json()
    assert got["priority"] == 7 and got["valid"] is True
    assert api.admin("POST", "/customers/cust_contract/configs", json=config_body("LIFE_CFG")).status_code == 409
    stale = api.admin("PATCH", "/customers/cust_contract/configs/life_cfg", json={"version": 5, "priority": 2})
    assert stale.status_code == 409 and stale.json()["current_version"] == 1
    patched = api.admin("PATCH", "/customers/cust_contract/configs/life_cfg", json={"version": 1, "priority": 2})
    assert patched.status_code == 200, patched.text
    assert patched.json()["priority"] == 2 and patched.json()["version"] == 2
    by_header = api.admin(
        "PATCH", "/customers/cust_contract/configs/life_cfg", json={"priority": 3}, headers={"If-Match": '"2"'}
    )
    assert by_header.status_code == 200 and by_header.json()["version"] == 3
    assert api.admin("DELETE", "/customers/cust_contract/configs/life_cfg?version=3").status_code == 200
    assert api.admin("GET", "/customers/cust_contract/configs/life_cfg").status_code == 404
    assert api.admin("GET", "/customers/no_such_customer/configs").status_code == 404


def test_list_filters_and_cursor_pages_cover_every_config_once(api, customer):
    for index in range(5):
        provider = "AWS" if index % 2 else "GCP"
        body = config_body(f"page_{index}", provider=provider, is_active=index != 4)
        assert api.admin("POST", "/customers/cust_contract/configs", json=body).status_code == 201
    seen, cursor = [], None
    while True:
        page = api.admin(
            "GET", "/customers/cust_contract/configs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        ).json()
        seen += [c["config_id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [c for c in seen if c.startswith("page_")] == [f"page_{i}" for i in range(5)]
    assert len(seen) == len(set(seen))
    aws = api.admin("GET", "/customers/cust_contract/configs", params={"provider": "AWS"}).json()["items"]
    assert {c["config_id"] for c in aws} == {"page_1", "page_3"}
    paused = api.admin("GET", "/customers/cust_contract/configs", params={"active": "false"}).json()["items"]
    assert "page_4" in {c["config_id"] for c in paused}


def test_a_retried_create_with_the_same_idempotency_key_makes_one_config(api, customer):
    headers = {"Idempotency-Key": "create-idem-1"}
    first = api.admin("POST", "/customers/cust_contract/configs", json=config_body("idem_cfg"), headers=headers)
    again = api.admin("POST", "/customers/cust_contract/configs", json=config_body("idem_cfg"), headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert again.json()["version"] == first.json()["version"] == 1
    other = api.admin("POST", "/customers/cust_contract/configs", json=config_body("idem_other"), headers=headers)
    assert other.status_code == 422  # the key names another request
    items = api.admin("GET", "/customers/cust_contract/configs", params={"limit": 500}).json()["items"]
    assert [c["config_id"] for c in items].count("idem_cfg") == 1


def test_pause_and_enable_reach_airflow_within_seconds_and_a_new_config_becomes_a_dag(stack, api, customer):
    _, client = stack
    created = api.admin("POST", "/customers/cust_contract/configs", json=config_body("flip_cfg"))
    assert created.status_code == 201, created.text
    assert created.json()["applied_in_airflow"] is True, created.text
    dag_id = created.json()["dag_id"]
    client.wait_for_dags([dag_id], timeout=120)  # created without a new DAG file, at the fleet file's re-parse
    assert client.dag(dag_id)["is_paused"] is False
    paused = api.admin("POST", "/customers/cust_contract/configs/flip_cfg/pause", json={"reason": "e2e"})
    assert paused.status_code == 200 and paused.json()["is_active"] is False, paused.text
    assert paused.json()["applied_in_airflow"] is True, paused.text
    _wait(lambda: client.dag(dag_id)["is_paused"] is True, timeout=5)
    enabled = api.admin("POST", "/customers/cust_contract/configs/flip_cfg/enable")
    assert enabled.status_code == 200 and enabled.json()["applied_in_airflow"] is True, enabled.text
    _wait(lambda: client.dag(dag_id)["is_paused"] is False, timeout=5)


def test_preview_returns_the_next_ten_fire_times_across_a_dst_change(api, customer):
    body = config_body("preview_cfg", schedule_cron="30 2 * * *", timezone="Europe/Berlin")
    preview = api.admin("POST", "/customers/cust_contract/config-previews", json=body)
    assert preview.status_code == 200, preview.text
    runs = preview.json()["next_runs"]
    assert len(runs) == 10
    assert all(r["local"][11:16] in ("02:30", "03:30") for r in runs)
    bad = api.admin("POST", "/customers/cust_contract/config-previews", json={**body, "timezone": "Nowhere/City"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "timezone"
    assert api.admin("GET", "/customers/cust_contract/configs/preview_cfg").status_code == 404


def test_a_start_window_is_stored_shown_with_its_offset_and_previewed_as_start_times(api, customer):
    """Issue 23: the field round-trips; the config shows its offset (stable: the same on every read)
    and the preview gives each tick and when its run starts."""
    body = config_body("window_cfg", schedule_cron="0 2 * * *", start_window_minutes=30)
    created = api.admin("POST", "/customers/cust_contract/configs", json=body)
    assert created.status_code == 201, created.text
    offset = created.json()["start_offset_seconds"]
    assert created.json()["start_window_minutes"] == 30 and 0 <= offset < 30 * 60
    got = api.admin("GET", "/customers/cust_contract/configs/window_cfg").json()
    assert (got["start_window_minutes"], got["start_offset_seconds"]) == (30, offset)
    preview = api.admin(
        "POST", "/customers/cust_contract/config-previews", json={**body, "config_id": "window_cfg"}
    ).json()
    assert preview["start_offset_seconds"] == offset
    first = preview["next_runs"][0]
    assert datetime.fromisoformat(first["starts_at"]) - datetime.fromisoformat(first["utc"]) == timedelta(
        seconds=offset
    )
    patched = api.admin("PATCH", "/customers/cust_contract/configs/window_cfg", json={"start_window_minutes": 0})
    assert patched.status_code == 200 and patched.json()["start_offset_seconds"] == 0, patched.text
    # a config written without the field has no window
    plain = api.admin("POST", "/customers/cust_contract/configs", json=config_body("no_window_cfg")).json()
    assert (plain["start_window_minutes"], plain["start_offset_seconds"]) in ((0, 0), (None, 0))


def test_a_trigger_over_the_daily_limit_is_refused_with_429_and_the_limit(api):
    onboard(api, "cust_quota_api", plan="STARTER", daily_run_limit=0)
    assert api.admin("POST", "/customers/cust_quota_api/configs", json=config_body("q_cfg")).status_code == 201
    refused = api.admin("POST", "/customers/cust_quota_api/configs/q_cfg/runs")
    assert refused.status_code == 429, refused.text
    assert refused.json()["limit"] == "DAILY_LIMIT"


def test_usage_runs_and_fleet_status_answer(api, customer):
    usage = api.admin("GET", "/customers/cust_contract/usage").json()
    assert usage["today"]["limit"] == 25 and usage["concurrency"]["limit"] == 3
    runs = api.admin("GET", "/customers/cust_contract/runs", params={"state": "FAILED"})
    assert runs.status_code == 200 and runs.json()["items"] == []
    assert api.admin("GET", "/customers/cust_contract/runs", params={"state": "BOGUS"}).status_code == 422
    status = api.admin("GET", "/fleet/status").json()
    assert status["customers"] >= 1 and "mirror_backlog" in status


def test_a_customer_key_sees_only_its_own_customer(api):
    own = onboard(api, "cust_key_own")
    onboard(api, "cust_key_other")
    assert api.call("GET", "/customers/cust_key_own/configs", key=own["api_key"]).status_code == 200
    assert api.call("GET", "/customers/cust_key_other/configs", key=own["api_key"]).status_code == 404
    created = api.call("POST", "/customers/cust_key_own/configs", key=own["api_key"], json=config_body("k_cfg"))
    assert created.status_code == 201 and created.json()["updated_by"].startswith("api-key:")


def test_suspend_zeroes_the_pool_and_reactivate_restores_it(stack, api):
    _, client = stack
    onboard(api, "cust_suspend_api", plan="SCALE")
    assert api.admin("POST", "/customers/cust_suspend_api/suspend").json()["status"] == "SUSPENDED"
    assert client._request("GET", "/api/v2/pools/cp_cust_suspend_api")["slots"] == 0
    assert api.admin("POST", "/customers/cust_suspend_api/reactivate").json()["status"] == "ACTIVE"
    assert client._request("GET", "/api/v2/pools/cp_cust_suspend_api")["slots"] == 10
    changed = api.admin("PUT", "/customers/cust_suspend_api/plan", json={"plan": "ENTERPRISE"})
    assert changed.status_code == 200 and changed.json()["plan"] == "ENTERPRISE"
    assert client._request("GET", "/api/v2/pools/cp_cust_suspend_api")["slots"] == 25


def test_32_concurrent_pauses_and_enables_all_answer_and_the_last_one_wins(stack, api):
    _, client = stack
    onboard(api, "cust_concurrent")
    configs = [f"c_{i}" for i in range(8)]
    for config_id in configs:
        assert api.admin("POST", "/customers/cust_concurrent/configs", json=config_body(config_id)).status_code == 201
    # Their DAGs exist (a change made before a DAG's first parse is applied by the next sync round).
    client.wait_for_dags([dag_id_for("cust_concurrent", c) for c in configs], timeout=120)
    requests = [(configs[i % 8], "pause" if (i // 8) % 2 == 0 else "enable") for i in range(32)]

    def send(item):
        config_id, action = item
        return config_id, api.admin("POST", f"/customers/cust_concurrent/configs/{config_id}/{action}")

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(send, requests))
    assert all(r.status_code in (200, 409, 429, 503) for _, r in answers), [r.text for _, r in answers]
    ok = [(c, r.json()) for c, r in answers if r.status_code == 200]
    assert len(ok) == 32  # no version given: each request waits its turn, none is refused
    assert [b["airflow_detail"] for _, b in ok if not b["applied_in_airflow"]] == []
    for config_id in configs:
        last = max((body for c, body in ok if c == config_id), key=lambda body: body["version"])
        current = api.admin("GET", f"/customers/cust_concurrent/configs/{config_id}").json()
        assert current["version"] == last["version"] == 5  # created, then four changes
        assert current["is_active"] is last["is_active"]
        dag_id = dag_id_for("cust_concurrent", config_id)
        history = sorted((b["version"], b["is_active"], b["paused"], b["unpaused"]) for c, b in ok if c == config_id)
        assert client.dag(dag_id)["is_paused"] is (not last["is_active"]), (dag_id, history)


def test_operator_routes_refuse_bad_input_naming_the_field(api, customer):
    past = api.admin("POST", "/customers/cust_contract/api-keys", json={"expires_at": "2020-01-01T00:00:00Z"})
    assert past.status_code == 422 and past.json()["errors"][0]["field"] == "expires_at"
    bad_id = api.admin("POST", "/customers", json={"customer_id": "Bad.Id", "company_name": "x", "plan": "STARTER"})
    assert bad_id.status_code == 422 and bad_id.json()["errors"][0]["field"] == "customer_id"
    bad_plan = api.admin("POST", "/customers", json={"customer_id": "cust_x", "company_name": "x", "plan": "GOLD"})
    assert bad_plan.status_code == 422 and bad_plan.json()["errors"][0]["field"] == "plan"
    assert (
        api.admin(
            "POST", "/customers", json={"customer_id": "cust_contract", "company_name": "x", "plan": "STARTER"}
        ).status_code
        == 409
    )
    assert api.admin("GET", "/customers/cust_nobody").status_code == 404
    assert api.admin("DELETE", f"/customers/cust_contract/api-keys/{'0' * 16}").status_code == 404
