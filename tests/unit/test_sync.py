"""The sync's pure parts: which pools, which DAGs may run, and each config's next tick."""

from __future__ import annotations

from datetime import UTC, datetime

from customer_pipelines.models import Customer
from customer_pipelines.snapshot import Snapshot, write_snapshot
from customer_pipelines.sync import Fleet, desired_pools, next_runs, runnable_dags


def _customer(customer_id: str, status: str = "ACTIVE", slots: int | None = 3) -> Customer:
    return Customer(
        customer_id=customer_id,
        company_name=customer_id.title(),
        status=status,
        plan="PROFESSIONAL" if slots else None,  # no slots: no subscription in force (NULLs of the LEFT JOIN)
        max_concurrent_runs=slots,
    )


def test_pools_get_the_plan_concurrency_and_zero_slots_when_the_customer_is_not_active():
    pools = desired_pools(
        {"a": _customer("a"), "b": _customer("b", "SUSPENDED"), "c": _customer("c", "CHURNED")}, "cp_"
    )
    assert {name: spec.slots for name, spec in pools.items()} == {"cp_a": 3, "cp_b": 0, "cp_c": 0}
    assert "SUSPENDED" in pools["cp_b"].description


def test_a_customer_without_a_subscription_keeps_its_pool_with_zero_slots():
    pools = desired_pools({"a": _customer("a"), "d": _customer("d", slots=None)}, "cp_")
    assert {name: spec.slots for name, spec in pools.items()} == {"cp_a": 3, "cp_d": 0}
    assert pools["cp_d"].description == "D (no subscription, ACTIVE)"


def test_configs_of_a_customer_without_a_subscription_are_kept_and_not_runnable(tmp_path, demo_customers, demo_configs):
    lapsed = [
        {**c, "plan": None, "daily_run_limit": None, "monthly_run_limit": None, "max_concurrent_runs": None}
        if c["customer_id"] == "cust_globex_001"
        else c
        for c in demo_customers
    ]
    with Snapshot(write_snapshot(tmp_path / "configs.sqlite", lapsed, demo_configs, source="test")) as snapshot:
        fleet = Fleet.of(snapshot)
    assert set(fleet.customers) == {"cust_acme_001", "cust_globex_001"}
    assert runnable_dags(fleet) == {
        "cust_acme_001.acme_gcp_cost_daily": True,
        "cust_acme_001.acme_gcp_security_weekly": True,
        "cust_globex_001.globex_aws_cost_daily": False,
        "cust_globex_001.globex_azure_compliance_monthly": False,
    }
    assert desired_pools(fleet.customers, "cp_")["cp_cust_globex_001"].slots == 0


def test_next_tick_is_computed_in_the_config_timezone_across_dst(tmp_path, demo_customers, demo_configs):
    path = write_snapshot(tmp_path / "configs.sqlite", demo_customers, demo_configs, source="test")
    # 2026-03-08 02:00 is the US spring-forward: 03:00 New York is 08:00 UTC before it (EST) and 07:00 after.
    with Snapshot(path) as snapshot:
        fleet = Fleet.of(snapshot)
    runnable = runnable_dags(fleet)
    before = {r["config_id"]: r["next_run_time"] for r in next_runs(fleet, datetime(2026, 3, 7, 5, tzinfo=UTC))}
    after = {r["config_id"]: r["next_run_time"] for r in next_runs(fleet, datetime(2026, 3, 8, 12, tzinfo=UTC))}
    assert before["globex_aws_cost_daily"] == datetime(2026, 3, 7, 8, 0, tzinfo=UTC)  # EST, UTC-5
    assert after["globex_aws_cost_daily"] == datetime(2026, 3, 9, 7, 0, tzinfo=UTC)  # EDT, UTC-4
    assert before["acme_gcp_cost_daily"] == datetime(2026, 3, 8, 2, 0, tzinfo=UTC)  # 05:00 UTC: 02:00 has passed
    assert set(before) == {c["config_id"] for c in demo_configs} and all(runnable.values())
