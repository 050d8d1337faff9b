"""Quotas on real Airflow: twelve runs of one customer released at once on the LocalExecutor
(parallelism 8, the customer's pool wide open) take exactly the five daily units."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from customer_pipelines.store import BigQueryStore
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
