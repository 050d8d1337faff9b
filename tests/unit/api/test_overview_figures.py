"""The fleet page's schedule figures (runs per hour for the next 24 hours, runs due within the hour
per customer) from the runnable configs' own timetables, and the success rate per day; the charts
draw numbers only and escape every label."""

from __future__ import annotations

from datetime import UTC, date, datetime

from customer_pipelines.api.overview import _by_day, _schedule_figures
from customer_pipelines.fleet.sync import Fleet
from customer_pipelines.models import Customer, PipelineConfig
from customer_pipelines.seed import config_row
from customer_pipelines.ui.charts import bars, meter

NOW = datetime(2026, 12, 4, 1, 30, tzinfo=UTC)


def _config(config_id: str, customer_id: str, cron: str, timezone: str = "UTC", **more) -> PipelineConfig:
    row = config_row(config_id, customer_id, config_id, "GCP", "COST", "cost_billing", cron, timezone, now=NOW)
    return PipelineConfig.model_validate({**row, **more})


def _customer(customer_id: str, status: str = "ACTIVE") -> Customer:
    return Customer(customer_id=customer_id, status=status, plan="SCALE", max_concurrent_runs=5)


def test_runs_per_hour_and_due_within_the_hour_follow_each_runnable_configs_schedule():
    fleet = Fleet(
        customers={
            "cust_a": _customer("cust_a"),
            "cust_b": _customer("cust_b"),
            "cust_off": _customer("cust_off", "SUSPENDED"),
        },
        configs=[
            _config("daily", "cust_a", "0 2 * * *"),  # 02:00: hour index 1
            _config("half_hourly", "cust_b", "*/30 * * * *"),  # two per hour; 01:30 is now (counts)
            _config("ny_morning", "cust_a", "0 9 * * *", "America/New_York"),  # 14:00 UTC: index 13
            _config("paused_config", "cust_a", "0 3 * * *", is_active=False),  # not runnable
            _config("suspended", "cust_off", "0 2 * * *"),  # its customer is suspended
        ],
    )
    due, per_hour = _schedule_figures(fleet, NOW)
    expected = [2] * 24
    expected[0] = 1  # 01:30 only (01:00 is past)
    expected[1] += 1
    expected[13] += 1
    assert per_hour == expected
    assert dict(due) == {"cust_a": 1, "cust_b": 3}  # 02:00 daily; 01:30, 02:00 and 02:30 (within the hour)


def test_a_start_window_moves_a_run_into_the_hour_it_starts():
    config = _config("windowed", "cust_a", "0 2 * * *", start_window_minutes=120)
    fleet = Fleet(customers={"cust_a": _customer("cust_a")}, configs=[config])
    _, per_hour = _schedule_figures(fleet, NOW)
    starts = datetime(2026, 12, 4, 2, tzinfo=UTC) + config.start_offset
    assert per_hour.index(1) == int((starts - NOW.replace(minute=0)).total_seconds() // 3600)
    assert sum(per_hour) == 1


def test_success_rate_per_day_covers_seven_days_and_says_no_data_for_a_day_without_runs():
    rows = [
        {"day": date(2026, 12, 1), "completed": 9, "failed": 1},
        {"day": date(2026, 12, 4), "completed": 0, "failed": 2},
    ]
    days = _by_day(rows, date(2026, 12, 4))
    assert [d["day"] for d in days] == [f"2026-11-{n}" for n in (28, 29, 30)] + [f"2026-12-0{n}" for n in (1, 2, 3, 4)]
    assert [d["success_rate"] for d in days] == [None, None, None, 0.9, None, None, 0.0]


def test_charts_escape_labels_and_draw_one_bar_per_value():
    svg = bars([3, None, 1], ["<b>x</b>", "y", "z"], title="t & u")
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg and "t &amp; u" in svg
    assert svg.count('class="bar"') == 2 and "no data" in svg
    assert 'class="meter full"' in meter(5, 5) and 'class="meter high"' in meter(4, 5) and "no limit" in meter(3, None)
