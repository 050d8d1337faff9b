"""Quotas on real Airflow: twelve runs of one customer released at once on the LocalExecutor
(parallelism 8, the customer's pool wide open) take exactly the five daily units; a run cleared or
reprocessed by a backfill is a new unit."""

from __future__ import annotations

import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from customer_pipelines.bigquery.store import BigQueryStore
from tests_support import add_customer

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("round_number", [1, 2])  # a race test: more than one round
def test_twelve_runs_at_once_execute_five_and_skip_seven_for_quota(stack, round_number):
    info, client = stack
    customer_id = f"cust_race_{round_number:03d}"
    dag_ids = add_customer(
        info,
        customer_id,
        "STARTER",
        [(f"race{round_number}_{i:02d}", 5) for i in range(12)],
        daily_run_limit=5,
        monthly_run_limit=100,
        max_concurrent_runs=12,
    )
    store = BigQueryStore(info.settings)
    client.wait_for_dags(dag_ids, timeout=240)
    assert client.pool(f"cp_{customer_id}")["slots"] == 12

    with ThreadPoolExecutor(12) as pool:
        runs = list(pool.map(client.trigger, dag_ids))
    finished = [client.wait_for_run(r["dag_id"], r["dag_run_id"], timeout=300) for r in runs]

    task_states = Counter(client.task_instances(r["dag_id"], r["dag_run_id"])[0]["state"] for r in runs)
    assert task_states == {"success": 5, "skipped": 7}
    assert all(f["state"] == "success" for f in finished)  # a quota skip is not a failure
    mirrored = Counter()
    for r in runs:
        events = store.query("queries/runs_of_dag_run.sql", {"dag_id": r["dag_id"], "run_id": r["dag_run_id"]})
        final = events[-1]
        mirrored[(final["state"], final["skip_reason"])] += 1
    assert mirrored == {("COMPLETED", None): 5, ("SKIPPED", "QUOTA_EXCEEDED"): 7}


def _reservations(info, customer_id: str) -> list[str]:
    import psycopg2

    with psycopg2.connect(info.settings.quota_db_url) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_key FROM cp_quota_reservations WHERE customer_id = %s", (customer_id,))
        keys = [row[0] for row in cur.fetchall()]
    conn.close()
    return keys


def test_a_cleared_run_and_a_backfill_reprocessing_it_at_the_daily_limit_are_skipped_for_quota(stack):
    """Each execution of a run is a unit: a person's clear and a backfill with reprocess_behavior
    'completed' (Airflow's _handle_clear_run) run the same run_id again, and at the daily limit each
    new execution is refused and mirrored SKIPPED QUOTA_EXCEEDED (the first one ran and took the unit).
    The run is a scheduled tick under a minute or so ahead: a backfill creates runs only for the DAG's
    ticks, and its timetable has none before the config became runnable."""
    info, client = stack
    customer_id = "cust_reexec_001"
    # The next minute at least 15 s ahead: the DAG's first tick is the first at or after the config was
    # loaded, however late the DAG is parsed, so the tick need not leave room for the sync and parse.
    tick = (datetime.now(UTC) + timedelta(seconds=75)).replace(second=0, microsecond=0)
    [dag_id] = add_customer(
        info,
        customer_id,
        "STARTER",
        [("reexec_cost", 5)],
        config_fields={"schedule_cron": f"{tick.minute} {tick.hour} * * *"},
        daily_run_limit=1,
        monthly_run_limit=100,
    )
    client.wait_for_dags([dag_id], timeout=240)
    store = BigQueryStore(info.settings)

    def executed() -> tuple[str, tuple]:
        deadline = time.monotonic() + 300
        while not (runs := client.dag_runs(dag_id)) and time.monotonic() < deadline:
            time.sleep(2)
        [run] = runs
        assert client.wait_for_run(dag_id, run["dag_run_id"], timeout=240)["state"] == "success"
        [ti] = client.task_instances(dag_id, run["dag_run_id"])
        [current] = store.query("queries/runs_of_customers.sql", {"customer_ids": [customer_id]})
        return ti["state"], (current["state"], current["skip_reason"], current["clear_number"])

    assert executed() == ("success", ("COMPLETED", None, 0))  # the tick's run: it takes the day's only unit
    [run] = client.dag_runs(dag_id)
    assert run["run_type"] == "scheduled"

    client.clear_run(dag_id, run["dag_run_id"])
    assert executed() == ("skipped", ("SKIPPED", "QUOTA_EXCEEDED", 1))

    client.create_backfill(dag_id, tick.isoformat(), tick.isoformat(), reprocess_behavior="completed")
    assert executed() == ("skipped", ("SKIPPED", "QUOTA_EXCEEDED", 2))
    assert client.dag_runs(dag_id)[0]["run_type"] == "backfill"  # the same run, reprocessed by the backfill
    assert _reservations(info, customer_id) == [f"{dag_id}/{run['dag_run_id']}"]  # the one execution that ran
