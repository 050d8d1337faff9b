"""The fleet alerts as the syncer's round evaluates them (``python -m customer_pipelines sync``) from
Airflow's real metadata database and the quota ledger: runs made by Airflow's task runner (``airflow
dags test``: one failed for want of its customer's connection, others succeeded, each taking a unit
of the customer's daily quota) and runs waiting (``airflow dags trigger``, no scheduler to start
them). Two facts no command here can cause are written into Airflow's tables, and say so: a task
running for 45 minutes, and the passing of time (the failure window and the UTC day ending)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
from datetime import UTC, datetime

import psycopg2
import pytest

from customer_pipelines.seed import Dataset, config_row, customer_rows, load_dataset

pytestmark = pytest.mark.integration

CUSTOMER = "cust_alerts_001"
THRESHOLDS = {
    "CP_ALERT_WAITING_RUNS": "1",
    "CP_ALERT_RUNNING_MINUTES": "30",
    "CP_ALERT_FAILURE_RATE": "0.1",
    "CP_ALERT_FAILURE_MIN_RUNS": "2",
}


def _write(cli, sql: str, params: tuple = ()) -> None:
    with psycopg2.connect(cli.metadata_db_url) as conn, conn.cursor() as cur:
        cur.execute(sql, params)
    conn.close()


def _sync(cli) -> dict[str, list[str] | int]:
    out = dataclasses.replace(cli, env={**cli.env, **THRESHOLDS}).customer_pipelines("sync")
    found = re.search(r"fleet alerts: (\d+) open, raised \[(.*?)\], cleared \[(.*?)\]", out)
    assert found, out

    def keys(text: str) -> list[str]:
        return sorted(k.strip().strip("'") for k in text.split(",") if k.strip())

    return {"open": int(found.group(1)), "raised": keys(found.group(2)), "cleared": keys(found.group(3))}


def _dags_test(cli, dag_id: str, **env: str) -> str:
    before = {r[0] for r in cli.metadata("SELECT run_id FROM dag_run WHERE dag_id = %s", (dag_id,))}
    with contextlib.suppress(RuntimeError):  # a failed task may end `dags test` non-zero
        dataclasses.replace(cli, env={**cli.env, **env}).airflow("dags", "test", dag_id)
    [run_id] = [
        r[0] for r in cli.metadata("SELECT run_id FROM dag_run WHERE dag_id = %s", (dag_id,)) if r[0] not in before
    ]
    return run_id


def test_each_fleet_alert_is_raised_when_its_condition_starts_once_while_it_lasts_and_cleared_after(
    airflow_cli, emulator_settings
):
    from customer_pipelines.bigquery.store import BigQueryStore

    now = datetime.now(UTC)
    customer, subscription = customer_rows(CUSTOMER, "Alerts Inc", "SCALE", now=now)
    subscription["daily_run_limit"] = 3
    config = {
        **config_row(
            "alerts_cost", CUSTOMER, "alerts_cost", "GCP", "COST", "cost_billing", "0 2 * * *", "UTC", now=now
        ),
        "sla_breach_threshold_minutes": None,  # dag.test() and deadline alerts, see test_held_runs.py
        "retry_config": {"max_attempts": 1},
    }
    load_dataset(
        BigQueryStore(emulator_settings), Dataset(customers=[customer], subscriptions=[subscription], configs=[config])
    )
    dag_id = f"{CUSTOMER}.alerts_cost"
    assert _sync(airflow_cli)["raised"] == [], "an idle fleet raises nothing"

    # Three runs by the real task runner, each a unit of today's quota (3 of 3): one fails (no
    # connection while credentials are required), two succeed.
    failed = _dags_test(airflow_cli, dag_id, CP_CUSTOMER_CREDENTIALS="required")
    long_running = _dags_test(airflow_cli, dag_id)
    succeeded = _dags_test(airflow_cli, dag_id)
    states = dict(airflow_cli.metadata("SELECT run_id, state FROM dag_run WHERE dag_id = %s", (dag_id,)))
    assert (states[failed], states[long_running], states[succeeded]) == ("failed", "success", "success")
    # Two runs waiting to start: created, and no scheduler runs here to start them.
    airflow_cli.airflow("dags", "reserialize")
    for _ in range(2):
        airflow_cli.airflow("dags", "trigger", dag_id)
    # Written: one of the runs is still running, its task started 45 minutes ago.
    _write(airflow_cli, "UPDATE dag_run SET state = 'running', end_date = NULL WHERE run_id = %s", (long_running,))
    _write(
        airflow_cli,
        "UPDATE task_instance SET state = 'running', end_date = NULL, start_date = now() - interval '45 minutes'"
        " WHERE run_id = %s",
        (long_running,),
    )

    first = _sync(airflow_cli)
    assert first["raised"] == sorted(
        [
            "RUNS_WAITING",
            f"RUN_TOO_LONG:{dag_id}/{long_running}",
            "FAILURE_RATE:*",  # the fleet: 1 of 2 finished runs failed
            f"FAILURE_RATE:{CUSTOMER}",
            f"QUOTA_REACHED:{CUSTOMER}",
        ]
    ), first
    assert first["open"] == 5
    second = _sync(airflow_cli)
    assert (second["raised"], second["cleared"], second["open"]) == ([], [], 5), "not raised again while they last"

    # Each condition ends: the long run finishes, the waiting runs are done, the failure ages out of
    # the window (written: time passing), and the ledger is as on the next UTC day (written too).
    _write(
        airflow_cli, "UPDATE task_instance SET state = 'success', end_date = now() WHERE run_id = %s", (long_running,)
    )
    _write(
        airflow_cli,
        "UPDATE dag_run SET state = 'success', end_date = now() - interval '3 hours'"
        " WHERE dag_id = %s AND state IN ('queued', 'running')",
        (dag_id,),
    )
    _write(airflow_cli, "UPDATE dag_run SET end_date = now() - interval '2 hours' WHERE run_id = %s", (failed,))
    with psycopg2.connect(airflow_cli.settings.quota_db_url) as ledger, ledger.cursor() as cur:
        cur.execute("UPDATE cp_quota_reservations SET usage_day = usage_day - 1 WHERE customer_id = %s", (CUSTOMER,))
    ledger.close()

    third = _sync(airflow_cli)
    assert third["cleared"] == first["raised"], third
    assert (third["raised"], third["open"]) == ([], 0)
