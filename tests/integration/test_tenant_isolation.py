"""Two customers with the same config_id on the emulator and the quota ledger: a config is
(customer_id, config_id) everywhere, so neither customer's runs, failure count, auto-pause, usage
or quota touch the other's (tests/unit/test_factory.py proves each keeps its own DAG)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from customer_pipelines.models import Customer
from customer_pipelines.runs.failure_policy import apply_failure_policy
from customer_pipelines.runs.mirror import ErrorType, RunIdentity, RunState, run_event, write_events
from customer_pipelines.runs.quota import QuotaLedger
from customer_pipelines.seed import Dataset, config_row, customer_rows, load_dataset
from customer_pipelines.settings import Settings
from tests_support import rows_of_customer

pytestmark = pytest.mark.integration

SHARED_CONFIG_ID = "shared_daily"


def _load_twins(store) -> tuple[str, str]:
    stamp = f"{datetime.now(UTC):%H%M%S%f}"
    first, second = f"twin_a_{stamp}", f"twin_b_{stamp}"
    loaded = datetime.now(UTC) - timedelta(hours=1)
    data = Dataset()
    for customer_id in (first, second):
        customer, subscription = customer_rows(customer_id, f"{customer_id} Inc", "STARTER", now=loaded)
        data.customers.append(customer)
        data.subscriptions.append(subscription)
        data.configs.append(
            config_row(
                SHARED_CONFIG_ID, customer_id, "Daily", "GCP", "COST", "cost_billing", "0 2 * * *", "UTC", now=loaded
            )
        )
    load_dataset(store, data)
    return first, second


def _runs(store, customer_id: str, states: list[RunState]) -> None:
    base = datetime.now(UTC)
    events = []
    for i, state in enumerate(states):
        identity = RunIdentity(
            config_id=SHARED_CONFIG_ID,
            customer_id=customer_id,
            dag_id=f"{customer_id}.{SHARED_CONFIG_ID}",
            run_id=f"run_{i}",  # the same run ids for both customers: their DAG ids tell them apart
            task_id="run_pipeline",
            try_number=1,
            logical_date=base + timedelta(minutes=i),
        )
        started, ended = base + timedelta(seconds=i), base + timedelta(seconds=i, milliseconds=500)
        events.append(run_event(identity, RunState.RUNNING, source="operator", started_at=started))
        failed = state == RunState.FAILED
        events.append(
            run_event(
                identity,
                state,
                source="operator",
                started_at=started,
                ended_at=ended,
                error_type=ErrorType.PIPELINE.value if failed else None,
            )
        )
    write_events(store, events)


def test_two_customers_with_one_config_id_keep_their_runs_failures_pauses_and_usage_apart(store, tmp_path):
    failing, healthy = _load_twins(store)
    _runs(store, failing, [RunState.FAILED] * 5)
    _runs(store, healthy, [RunState.COMPLETED] * 2)
    settings = store.settings.model_copy(update={"state_dir": tmp_path})

    # each customer's runs are its own in the mirror's current state
    assert {r["state"] for r in rows_of_customer(store, "pipeline_runs_current", failing)} == {"FAILED"}
    assert {r["state"] for r in rows_of_customer(store, "pipeline_runs_current", healthy)} == {"COMPLETED"}
    [failing_status] = rows_of_customer(store, "pipeline_configs_status", failing)
    [healthy_status] = rows_of_customer(store, "pipeline_configs_status", healthy)
    assert (failing_status["consecutive_failures"], failing_status["last_run_status"]) == (5, "FAILED")
    assert (healthy_status["consecutive_failures"], healthy_status["last_run_status"]) == (0, "COMPLETED")
    [failing_usage] = rows_of_customer(store, "customer_usage", failing)
    [healthy_usage] = rows_of_customer(store, "customer_usage", healthy)
    assert (failing_usage["runs_today"], failing_usage["failed_today"]) == (5, 5)
    assert (healthy_usage["runs_today"], healthy_usage["succeeded_today"]) == (2, 2)

    # the failing customer's config is paused; the other customer's config of the same id is not
    assert apply_failure_policy(store, settings, lambda alert: None).paused == [f"{failing}.{SHARED_CONFIG_ID}"]
    active = {c["customer_id"]: c["is_active"] for c in store.fetch_configs() if c["config_id"] == SHARED_CONFIG_ID}
    assert (active[failing], active[healthy]) == (False, True)


def test_two_customers_with_one_config_id_and_one_run_id_each_take_their_own_quota(quota_db_url):
    ledger = QuotaLedger(Settings(quota_db_url=quota_db_url))
    ledger.ensure_schema()
    stamp = f"{datetime.now(UTC):%H%M%S%f}"
    customers = [
        Customer(
            customer_id=f"twin_{side}_{stamp}",
            status="ACTIVE",
            plan="STARTER",
            daily_run_limit=1,
            monthly_run_limit=10,
            max_concurrent_runs=1,
        )
        for side in ("a", "b")
    ]
    run_keys = [f"{c.customer_id}.{SHARED_CONFIG_ID}/scheduled__x" for c in customers]

    decisions = [ledger.reserve(c, key) for c, key in zip(customers, run_keys, strict=True)]

    assert [(d.allowed, d.used_today) for d in decisions] == [(True, 1), (True, 1)]
    # each customer is at its own daily limit of 1: a second run of either is refused
    assert [ledger.reserve(c, key + "_2").allowed for c, key in zip(customers, run_keys, strict=True)] == [
        False,
        False,
    ]
