"""The sync's pure parts: which pools, which DAGs may run, and each config's next tick."""

from __future__ import annotations

from datetime import UTC, datetime

from customer_pipelines.models import Customer
from customer_pipelines.snapshot import Snapshot, write_snapshot
from customer_pipelines.sync import Fleet, desired_pools, next_runs, runnable_dags


def _customer(customer_id: str, status: str = "ACTIVE", slots: int = 3) -> Customer:
    return Customer(
        customer_id=customer_id,
        company_name=customer_id.title(),
        status=status,
        plan="PROFESSIONAL",
        max_concurrent_runs=slots,
    )


def test_pools_get_the_plan_concurrency_and_zero_slots_when_the_customer_is_not_active():
    pools = desired_pools(
        {"a": _customer("a"), "b": _customer("b", "SUSPENDED"), "c": _customer("c", "CHURNED")}, "cp_"
    )
    assert {name: spec.slots for name, spec in pools.items()} == {"cp_a": 3, "cp_b": 0, "cp_c": 0}
    assert "SUSPENDED" in pools["cp_b"].description


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


def test_next_tick_of_a_cron_alias_is_computed_in_the_config_timezone_across_dst(
    tmp_path, demo_customers, demo_configs
):
    aliased = [
        {**demo_configs[0], "config_id": "daily_ny", "schedule_cron": "@daily", "timezone": "America/New_York"},
        {**demo_configs[0], "config_id": "weekly_berlin", "schedule_cron": "@weekly", "timezone": "Europe/Berlin"},
    ]
    path = write_snapshot(tmp_path / "configs.sqlite", demo_customers, aliased, source="test")
    with Snapshot(path) as snapshot:
        fleet = Fleet.of(snapshot)
    assert {c.config_id for c in fleet.configs} == {"daily_ny", "weekly_berlin"}

    def ticks(now: datetime) -> dict[str, datetime]:
        return {r["config_id"]: r["next_run_time"] for r in next_runs(fleet, now)}

    # New York springs forward on 2026-03-08, Berlin on 2026-03-29 (a Sunday: @weekly's day).
    assert ticks(datetime(2026, 3, 7, 6, tzinfo=UTC))["daily_ny"] == datetime(2026, 3, 8, 5, tzinfo=UTC)  # EST
    assert ticks(datetime(2026, 3, 8, 12, tzinfo=UTC))["daily_ny"] == datetime(2026, 3, 9, 4, tzinfo=UTC)  # EDT
    assert ticks(datetime(2026, 3, 23, tzinfo=UTC))["weekly_berlin"] == datetime(2026, 3, 28, 23, tzinfo=UTC)  # CET
    assert ticks(datetime(2026, 3, 29, 12, tzinfo=UTC))["weekly_berlin"] == datetime(2026, 4, 4, 22, tzinfo=UTC)
