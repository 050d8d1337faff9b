"""The sync's pure parts: which pools, which DAGs may run, and each config's next tick."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from customer_pipelines.fleet.sync import Fleet, desired_pools, next_runs, runnable_dags, runnable_dags_of
from customer_pipelines.models import Customer, PipelineConfig, parse_config
from customer_pipelines.snapshot import Snapshot, write_snapshot


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


def test_the_runnable_state_of_some_dags_is_the_whole_fleets_for_them_and_a_gone_config_is_left_out(
    tmp_path, demo_customers, demo_configs
):
    lapsed = [
        {**c, "plan": None, "max_concurrent_runs": None} if c["customer_id"] == "cust_globex_001" else c
        for c in demo_customers
    ]
    with Snapshot(write_snapshot(tmp_path / "configs.sqlite", lapsed, demo_configs, source="test")) as snapshot:
        whole = runnable_dags(Fleet.of(snapshot))
        some = ["cust_acme_001.acme_gcp_cost_daily", "cust_globex_001.globex_aws_cost_daily", "cust_gone.deleted"]
        assert runnable_dags_of(snapshot, some) == {d: whole[d] for d in some[:2]}
        assert runnable_dags_of(snapshot, whole) == whole


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


def _dst_days(zone: str, year: int) -> list[date]:
    """The local days of ``year`` on which ``zone``'s UTC offset changes."""
    tz = ZoneInfo(zone)
    days, day = [], date(year, 1, 1)
    while day.year == year:
        start = datetime(day.year, day.month, day.day, tzinfo=tz)
        end = (start + timedelta(days=1)).astimezone(UTC).astimezone(tz)
        if start.utcoffset() != end.utcoffset():
            days.append(day)
        day += timedelta(days=1)
    return days


def _zones_with_dst(year: int) -> list[str]:
    from zoneinfo import available_timezones

    from customer_pipelines.models import is_iana_timezone

    probes = [datetime(year, m, 15, tzinfo=UTC) for m in range(1, 13)]
    zones = (z for z in available_timezones() if is_iana_timezone(z))
    return sorted(z for z in zones if len({p.astimezone(ZoneInfo(z)).utcoffset() for p in probes}) > 1)


DST_CRONS = ("0 2 * * *", "30 2 * * *", "15 * * * *")
# Local times probed on a DST day: the hours where zones shift (midnight to 04:00), plus noon.
DST_PROBES = [
    timedelta(hours=h, minutes=m) for h, m in ((0, 7), (1, 7), (1, 37), (2, 7), (2, 37), (3, 7), (4, 7), (12, 7))
]


def test_config_next_runs_equal_the_dag_timetables_tick_on_both_dst_days_of_every_dst_timezone(monkeypatch):
    # What the scheduler runs next after a run at the previous tick (next_dagrun_info), against the
    # sync's config_next_runs figure, around the shift on both DST days of every timezone that has DST.
    import pendulum
    from airflow.timetables.base import DataInterval, TimeRestriction

    from customer_pipelines.fleet.timetables import CustomerCronTimetable

    zones = _zones_with_dst(2026)
    assert len(zones) > 50  # the table really covers the world's DST zones
    mismatches, compared = [], 0
    for zone in zones:
        configs = [_pipeline_config(f"c{i}", cron, zone) for i, cron in enumerate(DST_CRONS)]
        fleet = Fleet({"cust_a": _customer("cust_a")}, configs)
        anchor = datetime(2026, 1, 1, tzinfo=UTC)
        timetables = {
            c.config_id: CustomerCronTimetable(c.schedule_cron, timezone=zone, runnable_since=anchor) for c in configs
        }
        for day in _dst_days(zone, 2026):
            local_midnight = datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(zone))
            for probe in DST_PROBES:
                moment = (local_midnight + probe).astimezone(UTC)
                ours = {r["config_id"]: r["next_run_time"] for r in next_runs(fleet, moment)}
                monkeypatch.setattr("airflow.timetables.trigger.utcnow", lambda m=moment: pendulum.instance(m))
                for config in configs:
                    timetable = timetables[config.config_id]
                    previous = timetable._get_prev(pendulum.instance(moment))
                    info = timetable.next_dagrun_info(
                        last_automated_data_interval=DataInterval(previous, previous),
                        restriction=TimeRestriction(earliest=None, latest=None, catchup=False),
                    )
                    compared += 1
                    if info is None or ours[config.config_id] != info.run_after:
                        mismatches.append((zone, config.schedule_cron, moment, ours[config.config_id], info))
    assert compared > 5_000
    assert mismatches == []


def _pipeline_config(config_id: str, cron: str, zone: str) -> PipelineConfig:
    parsed = parse_config(
        {
            "config_id": config_id,
            "customer_id": "cust_a",
            "provider": "GCP",
            "domain": "COST",
            "pipeline_template": "cost_billing",
            "schedule_cron": cron,
            "timezone": zone,
        }
    )
    assert isinstance(parsed, PipelineConfig), parsed
    return parsed


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
