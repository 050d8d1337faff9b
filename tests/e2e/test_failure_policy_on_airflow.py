"""Failure policy on real Airflow: a non-retryable error fails a run at once (its configured retries
unused), and five failed runs in a row pause the config in BigQuery and in Airflow."""

from __future__ import annotations

import pytest

from customer_pipelines.local.stack import run_module
from customer_pipelines.store import BigQueryStore
from tests_support import add_customer

pytestmark = pytest.mark.e2e

CUSTOMER = "cust_failing_001"


def test_runs_failing_non_retryably_fail_at_once_and_five_in_a_row_pause_the_config(stack):
    info, client = stack
    [dag_id] = add_customer(
        info,
        CUSTOMER,
        "STARTER",
        [("failing_cost", 5)],
        config_fields={"retry_config": {"max_attempts": 3, "base_delay_minutes": 1, "backoff_multiplier": 2}},
    )
    client.wait_for_dags([dag_id], timeout=240)
    store = BigQueryStore(info.settings)
    data_store = store.for_plane("data")
    # The template's target table is gone: BigQuery answers 404, which no retry can fix.
    data_store.client.query(f"DROP TABLE `{data_store.table_id('cost_daily')}`").result()
    try:
        runs = []
        for _ in range(5):
            run = client.trigger(dag_id)
            runs.append(run["dag_run_id"])
            assert client.wait_for_run(dag_id, run["dag_run_id"], timeout=240)["state"] == "failed"
            [ti] = client.task_instances(dag_id, run["dag_run_id"])
            assert (ti["state"], ti["try_number"]) == ("failed", 1), ti  # no retry although 2 were configured
    finally:
        run_module(info.env, "schema", "apply")  # puts the table back for the other tests

    for run_id in runs:
        events = store.query("queries/runs_of_dag_run.sql", {"dag_id": dag_id, "run_id": run_id})
        ends = [(e["state"], e["try_number"]) for e in events if e["state"] in ("FAILED", "RETRYING", "COMPLETED")]
        assert ends == [("FAILED", 1)], events

    out = run_module(info.env, "sync")

    assert client.dag(dag_id)["is_paused"], out
    config = store.client.query(
        f"SELECT is_active, updated_by FROM `{store.table_id('customer_pipeline_configs')}`"
        " WHERE config_id = 'failing_cost'"
    ).result()
    assert [(r["is_active"], r["updated_by"]) for r in config] == [(False, "auto-pause")]
    audit = store.client.query(
        f"SELECT action, reason FROM `{store.table_id('pipeline_schedule_audit')}` WHERE config_id = 'failing_cost'"
    ).result()
    assert [(r["action"], r["reason"]) for r in audit] == [("AUTO_PAUSE", "5 consecutive failed runs (limit 5)")]
