"""The API's writes against BigQuery's write limits, which the emulator does not enforce: a second
``airflow api-server`` of the stack reaches the control-plane emulator only through the write-limits
double (tests/bigquery_limits_proxy.py: no UPDATE/DELETE/MERGE over rows streamed in the last 30
minutes, 2 running and 20 queued mutating DML per table). Everything else (scheduler, dag-processor,
metadata database, snapshot, PostgreSQL ledger) is the stack's own. The API appends versions by
streaming insert and runs no DML, so the limits never bite it; the twin tests show they would bite
the old-style UPDATE."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from google.api_core.exceptions import BadRequest

from bigquery_limits_proxy import BigQueryLimitsProxy
from customer_pipelines.api.app import URL_PREFIX
from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.local.airflow import airflow_bin
from customer_pipelines.local.processes import http_ok, spawn, stop, verify_listener, wait_until
from customer_pipelines.models import dag_id_for
from tests_support import config_body, free_port, onboard, rows_of_customer

pytestmark = pytest.mark.e2e

SERVER = "airflow-api-server-write-limits"
STREAMING_BUFFER_MESSAGE = "would affect rows in the streaming buffer, which is not supported"


@pytest.fixture(scope="module")
def limited(stack, api) -> Iterator[tuple[Any, BigQueryLimitsProxy]]:
    """(an Api helper for the second API server, the proxy in front of its BigQuery)."""
    info, _ = stack
    proxy = BigQueryLimitsProxy(info.env["BIGQUERY_EMULATOR_HOST"])
    proxy.start()
    port = free_port()
    env = {
        **info.env,
        "BIGQUERY_EMULATOR_HOST": proxy.host,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        # 32 requests at once from one caller: the answer under test is the write's, not the limiter's.
        "CP_API_RATE_LIMIT_PER_MINUTE": "100000",
    }
    run_dir = info.settings.state_dir / "run-write-limits"
    pid = spawn(SERVER, [airflow_bin(), "api-server"], run_dir=run_dir, env=env)
    try:
        wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/api/v2/monitor/health"),
            timeout=180,
            what="second Airflow API server",
            log_file=run_dir / f"{SERVER}.log",
        )
        verify_listener(port, pid, "second Airflow API server")  # the admin token goes to our process only
        yield (
            type(api)(
                base=f"http://127.0.0.1:{port}{URL_PREFIX}",
                admin_token=api.admin_token,
                viewer_token=api.viewer_token,
                norole_token=api.norole_token,
            ),
            proxy,
        )
    finally:
        stop(SERVER, run_dir)
        proxy.stop()


def _table(info: Any, name: str) -> str:
    return f"{info.settings.bq_project}.{info.settings.bq_dataset}.{name}"


def _clear_problem(response: httpx.Response) -> bool:
    """A refusal a client can act on: 409/429/503 as problem details saying why."""
    return (
        response.status_code in (409, 429, 503)
        and response.headers.get("content-type", "").startswith("application/problem+json")
        and bool(response.json().get("detail"))
    )


def test_32_concurrent_pauses_and_enables_against_bigquerys_write_limits_all_succeed_in_order(stack, limited):
    info, client = stack
    api, proxy = limited
    customer = "cust_write_limits"
    onboard(api, customer)
    configs = [f"wl_{i}" for i in range(8)]
    for config_id in configs:
        created = api.admin("POST", f"/customers/{customer}/configs", json=config_body(config_id))
        assert created.status_code == 201, created.text
    client.wait_for_dags([dag_id_for(customer, c) for c in configs], timeout=120)
    before = copy.deepcopy(proxy.stats)
    requests = [(configs[i % 8], "pause" if (i // 8) % 2 == 0 else "enable") for i in range(32)]

    def send(item: tuple[str, str]) -> tuple[str, httpx.Response]:
        config_id, action = item
        return config_id, api.admin("POST", f"/customers/{customer}/configs/{config_id}/{action}")

    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(send, requests))

    assert all(r.is_success or _clear_problem(r) for _, r in answers), [(r.status_code, r.text) for _, r in answers]
    ok = [(c, r.json()) for c, r in answers if r.is_success]
    assert len(ok) == 32, [r.text for _, r in answers if not r.is_success]  # no version given: each waits its turn
    assert [b["airflow_detail"] for _, b in ok if not b["applied_in_airflow"]] == []

    store = BigQueryStore(info.settings)  # the emulator itself, not the proxy
    current = {r["config_id"]: r for r in rows_of_customer(store, "customer_pipeline_configs_current", customer)}
    log = rows_of_customer(store, "customer_pipeline_configs", customer)
    for config_id in configs:
        answered = {b["version"]: b["is_active"] for c, b in ok if c == config_id}
        assert sorted(answered) == [2, 3, 4, 5]  # in order: one version each, none lost, none twice
        last = answered[5]
        assert api.admin("GET", f"/customers/{customer}/configs/{config_id}").json()["is_active"] is last
        assert (current[config_id]["version"], current[config_id]["is_active"]) == (5, last)
        logged = {r["version"]: r["is_active"] for r in log if r["config_id"] == config_id}
        assert logged == {1: True, **answered}, config_id  # the version log holds every answer as given
        assert client.dag(dag_id_for(customer, config_id))["is_paused"] is (not last), config_id

    audit = rows_of_customer(store, "pipeline_schedule_audit", customer, "AND action IN ('PAUSE', 'ENABLE')")
    audited = sorted((r["config_id"], _new_value(r)["version"]) for r in audit)
    assert audited == sorted((c, b["version"]) for c, b in ok)  # exactly one audit row per write

    config_table = _table(info, "customer_pipeline_configs")
    stats = proxy.stats
    assert stats.refused == before.refused
    assert sum(stats.mutating_dml.values()) == sum(before.mutating_dml.values()) == 0
    # 32 rows into each table, in fewer insertAll requests: concurrent writes share one (a group commit)
    audit_table = _table(info, "pipeline_schedule_audit")
    for table in (config_table, audit_table):
        assert stats.streamed_rows[table] - before.streamed_rows[table] == 32
        assert 1 <= stats.streamed_requests[table] - before.streamed_requests[table] <= 32


def _new_value(row: dict[str, Any]) -> dict[str, Any]:
    value = row["new_value"]
    return json.loads(value) if isinstance(value, str) else value


def test_a_config_created_by_streaming_insert_can_be_paused_a_second_later(stack, limited):
    info, _ = stack
    api, proxy = limited
    customer = "cust_write_limits_fresh"
    onboard(api, customer)
    assert api.admin("POST", f"/customers/{customer}/configs", json=config_body("fresh")).status_code == 201
    refused_before = proxy.stats.refused
    time.sleep(1)  # its row is in BigQuery's streaming buffer for ~30 minutes

    paused = api.admin("POST", f"/customers/{customer}/configs/fresh/pause")

    assert paused.status_code == 200, paused.text
    assert (paused.json()["version"], paused.json()["is_active"]) == (2, False)
    assert proxy.stats.refused == refused_before
    assert proxy.in_streaming_buffer(_table(info, "customer_pipeline_configs"))


def test_the_old_style_update_of_a_freshly_streamed_config_is_refused_by_the_double(stack, limited):
    """The twin of the test above: what a pause by UPDATE would meet in production."""
    info, _ = stack
    api, proxy = limited
    customer = "cust_write_limits_update"
    onboard(api, customer)
    assert api.admin("POST", f"/customers/{customer}/configs", json=config_body("fresh")).status_code == 201
    time.sleep(1)
    config_table = _table(info, "customer_pipeline_configs")
    through = BigQueryStore(info.settings.model_copy(update={"bigquery_emulator_host": proxy.host}))

    with pytest.raises(BadRequest, match=STREAMING_BUFFER_MESSAGE) as refused:
        through.client.query(
            f"UPDATE `{config_table}` SET is_active = FALSE WHERE customer_id = '{customer}' AND config_id = 'fresh'"
        ).result()

    assert f"statement over table {config_table} would affect" in str(refused.value)
    assert proxy.stats.refused_streaming_buffer[config_table] >= 1
    rows = rows_of_customer(BigQueryStore(info.settings), "customer_pipeline_configs_current", customer)
    assert [(r["version"], r["is_active"]) for r in rows] == [(1, True)]  # nothing changed
