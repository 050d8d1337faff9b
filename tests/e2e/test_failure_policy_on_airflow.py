"""Failure policy on real Airflow: a non-retryable error fails a run at once (its configured retries
unused), and five failed runs in a row pause the config in BigQuery and in Airflow; runs failed by
an outage of the quota ledger are retried and never count."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.local.stack import run_module
from tests_support import add_customer

pytestmark = pytest.mark.e2e

CUSTOMER = "cust_failing_001"
LEDGER_OUTAGE_CUSTOMER = "cust_ledger_down_001"


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
    # The configs table is a version log: the pause is a second version, the current one.
    versions = store.client.query(
        f"SELECT version, is_active, updated_by FROM `{store.table_id('customer_pipeline_configs')}`"
        " WHERE config_id = 'failing_cost' ORDER BY version"
    ).result()
    assert [(r["version"], r["is_active"], r["updated_by"]) for r in versions] == [
        (1, True, "seed"),
        (2, False, "auto-pause"),
    ]
    config = store.client.query(
        f"SELECT is_active, updated_by FROM `{store.table_id('customer_pipeline_configs_current')}`"
        " WHERE config_id = 'failing_cost'"
    ).result()
    assert [(r["is_active"], r["updated_by"]) for r in config] == [(False, "auto-pause")]
    audit = store.client.query(
        f"SELECT action, reason FROM `{store.table_id('pipeline_schedule_audit')}` WHERE config_id = 'failing_cost'"
    ).result()
    assert [(r["action"], r["reason"]) for r in audit] == [("AUTO_PAUSE", "5 consecutive failed runs (limit 5)")]


@contextlib.contextmanager
def _quota_ledger_down(info) -> Iterator[None]:
    """The quota ledger's database refuses every new connection (ALLOW_CONNECTIONS false), as a
    ledger whose server is down does; Airflow's own database on the same server stays up."""
    dsn = psycopg2.extensions.parse_dsn(info.settings.quota_db_url)
    admin = psycopg2.connect(**{**dsn, "dbname": "postgres"})
    admin.autocommit = True
    statement = sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}")
    try:
        with admin.cursor() as cur:
            cur.execute(statement.format(sql.Identifier(dsn["dbname"]), sql.SQL("false")))
        yield
    finally:
        with admin.cursor() as cur:
            cur.execute(statement.format(sql.Identifier(dsn["dbname"]), sql.SQL("true")))
        admin.close()


def _consecutive_failures(store: BigQueryStore, config_id: str) -> int:
    rows = store.client.query(
        f"SELECT consecutive_failures FROM `{store.table_id('pipeline_configs_status')}`"
        f" WHERE config_id = '{config_id}'"
    ).result()
    return next(iter(rows))["consecutive_failures"]


def test_a_quota_ledger_outage_fails_runs_as_the_platforms_and_never_counts_toward_auto_pause(stack):
    info, client = stack
    [dag_id] = add_customer(
        info,
        LEDGER_OUTAGE_CUSTOMER,
        "STARTER",
        [("ledger_down_cost", 5)],
        config_fields={"retry_config": {"max_attempts": 2, "base_delay_minutes": 0.05, "backoff_multiplier": 1}},
    )
    client.wait_for_dags([dag_id], timeout=240)
    store = BigQueryStore(info.settings)

    runs = []
    with _quota_ledger_down(info):
        for _ in range(info.settings.consecutive_failures_to_pause):
            run = client.trigger(dag_id)
            runs.append(run["dag_run_id"])
            assert client.wait_for_run(dag_id, run["dag_run_id"], timeout=240)["state"] == "failed"
            [ti] = client.task_instances(dag_id, run["dag_run_id"])
            assert (ti["state"], ti["try_number"]) == ("failed", 2), ti  # a platform failure is retried
        out = run_module(info.env, "sync")  # reconcile and the failure policy, the ledger still down

    for run_id in runs:
        events = store.query("queries/runs_of_dag_run.sql", {"dag_id": dag_id, "run_id": run_id})
        ends = [e for e in events if e["state"] in ("RETRYING", "FAILED", "TIMEOUT", "COMPLETED")]
        assert [(e["state"], e["try_number"], e["error_type"], e["source"]) for e in ends] == [
            ("RETRYING", 1, "PLATFORM", "operator"),
            ("FAILED", 2, "PLATFORM", "operator"),
        ], events
        assert "quota ledger" in ends[-1]["error_message"], ends[-1]
    assert _consecutive_failures(store, "ledger_down_cost") == 0, out
    assert not client.dag(dag_id)["is_paused"], out

    # The customer's own failure still counts: the template's target table is gone (404, final).
    data_store = store.for_plane("data")
    data_store.client.query(f"DROP TABLE `{data_store.table_id('cost_daily')}`").result()
    try:
        run = client.trigger(dag_id)
        assert client.wait_for_run(dag_id, run["dag_run_id"], timeout=240)["state"] == "failed"
    finally:
        run_module(info.env, "schema", "apply")  # puts the table back for the other tests
    run_module(info.env, "sync")
    assert _consecutive_failures(store, "ledger_down_cost") == 1
