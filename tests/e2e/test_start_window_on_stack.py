"""Start windows on the real stack (issue 23): 20 configs due at one tick with a 2-minute window start
spread over the window, each at its own offset, each run keeping its tick (logical date) in Airflow
and in the mirror, and each counted in the quota ledger on its tick's day.

The tick at 23:59 with a window past midnight cannot be staged on a live scheduler (its clock is the
machine's): tests/integration/test_executions.py runs that case through the operator's quota gate on
the real ledger with an injected clock. Here the ledger rows show the day each run was counted on is
its tick's day, the rule that case depends on."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.local.stack import run_module
from customer_pipelines.models import start_offset
from customer_pipelines.seed import load_dataset
from tests_support import one_tick_dataset

pytestmark = pytest.mark.e2e

CUSTOMERS = ["cust_window_a", "cust_window_b"]
CONFIGS_PER_CUSTOMER = 10
WINDOW_MINUTES = 2
LEAD = timedelta(seconds=50)
"""At least this far ahead of the load is the tick (the next whole minute after it): loading, one sync
and the parse of 20 new DAGs fit in it (about 15 s here)."""


def _aware(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.timeout(1500)
def test_twenty_configs_at_one_tick_with_a_two_minute_window_start_spread_over_it_mirrored_with_their_tick(stack):
    info, client = stack
    store = BigQueryStore(info.settings)
    now = datetime.now(UTC)
    tick = (now + LEAD).replace(second=0, microsecond=0) + timedelta(minutes=1)
    cron = f"{tick.minute} {tick.hour} * * *"
    data = one_tick_dataset(
        CUSTOMERS, CONFIGS_PER_CUSTOMER, cron, now, config_prefix="spread", start_window_minutes=WINDOW_MINUTES
    )
    offsets = {
        f"{c['customer_id']}.{c['config_id']}": start_offset(f"{c['customer_id']}.{c['config_id']}", 2)
        for c in data.configs
    }
    dag_ids = set(offsets)
    # the ids give offsets over most of the window (the test's premise, not the code under test)
    assert max(offsets.values()) - min(offsets.values()) > timedelta(seconds=80)
    load_dataset(store, data)
    try:
        run_module(info.env, "sync")
        client.wait_for_dags(sorted(dag_ids), timeout=180)
        ahead = (tick - datetime.now(UTC)).total_seconds()
        assert ahead > 5, f"the DAGs were registered only {ahead:.0f}s before their tick; raise LEAD"

        deadline = time.monotonic() + ahead + WINDOW_MINUTES * 60 + 420
        runs: list[dict] = []
        while time.monotonic() < deadline:
            time.sleep(5)
            try:
                listed = client.runs_of_all_dags(run_after_gte=(now - timedelta(days=2)).isoformat())
            except OSError:
                continue
            runs = [r for r in listed if r["dag_id"] in dag_ids]
            if sum(r["state"] in ("success", "failed") for r in runs) >= len(dag_ids):
                break

        assert {r["dag_id"] for r in runs} == dag_ids and len(runs) == len(dag_ids), "one run per config"
        assert [r for r in runs if r["state"] != "success" or r["run_type"] != "scheduled"] == []
        for run in runs:
            due = tick + offsets[run["dag_id"]]
            assert _aware(run["logical_date"]) == tick, run  # the run is the tick's
            assert _aware(run["run_after"]) == due, run  # due at the config's own offset
            assert _aware(run["start_date"]) >= due, f"{run['dag_id']} started before its offset"
        starts = sorted(_aware(r["start_date"]) for r in runs)
        # spread over the window: not one burst at the tick (its twin, without a window, is every
        # start within seconds of the tick: tests/e2e/test_first_tick_burst.py)
        assert starts[-1] - starts[0] >= max(offsets.values()) - min(offsets.values()) - timedelta(seconds=20)
        first_half = sum(s < tick + timedelta(minutes=WINDOW_MINUTES / 2) for s in starts)
        assert 3 <= first_half <= 17, f"{first_half} of 20 started in the window's first half"

        # The mirror: each run COMPLETED with its tick and when it was due, started at or after it.
        run_module(info.env, "sync")
        mirrored = store.query("queries/runs_of_customers.sql", {"customer_ids": CUSTOMERS})
        assert {m["dag_id"] for m in mirrored} == dag_ids and len(mirrored) == len(dag_ids)
        for row in mirrored:
            assert (row["state"], row["logical_date"]) == ("COMPLETED", tick), row
            assert row["scheduled_time"] == tick + offsets[row["dag_id"]] <= row["started_at"], row

        # The quota: each run counted once, on its tick's day.
        with psycopg2.connect(info.settings.quota_db_url) as conn, conn.cursor() as cur:
            cur.execute(
                "SELECT run_key, usage_day FROM cp_quota_reservations WHERE customer_id = ANY(%s)", (CUSTOMERS,)
            )
            ledger = cur.fetchall()
        conn.close()
        assert sorted(key.split("/")[0] for key, _ in ledger) == sorted(dag_ids)
        assert {day for _, day in ledger} == {tick.date()}
    finally:
        store.query("queries/delete_customers.sql", {"customer_ids": CUSTOMERS})
        run_module(info.env, "snapshot", "refresh", "--force")
        run_module(info.env, "sync")
