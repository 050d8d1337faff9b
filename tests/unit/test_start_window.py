"""Start windows (issue 23): a config's runs start at a stable offset inside its window after each
tick (models.start_offset), so a fleet whose crons share a minute spreads its burst."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from customer_pipelines import snapshot
from customer_pipelines.models import MAX_START_WINDOW_MINUTES, PipelineConfig, shortest_cron_gap, start_offset
from customer_pipelines.settings import get_settings
from tests_support import run_fleet_files

FLEET_IDS = [f"cust_{i // 5:04d}.cfg_{i % 5}" for i in range(5_000)]
"""5,000 configs as a fleet names them: 1,000 customers of five configs each."""


def _uniformity(offsets: list[timedelta], window: timedelta) -> float:
    """The largest gap between the share of offsets below x and x's share of the window, over every
    x (the Kolmogorov-Smirnov distance to the uniform distribution): 0 is perfectly even."""
    seconds = sorted(o.total_seconds() / window.total_seconds() for o in offsets)
    n = len(seconds)
    return max(max((i + 1) / n - x, x - i / n) for i, x in enumerate(seconds))


def _config(**overrides: Any) -> dict[str, Any]:
    row = {
        "config_id": "daily_cost",
        "customer_id": "cust_a",
        "provider": "GCP",
        "domain": "COST",
        "pipeline_template": "cost_billing",
        "schedule_cron": "0 2 * * *",
    }
    return {**row, **overrides}


def test_the_offset_lies_inside_the_window_in_whole_seconds_for_every_window_size():
    for minutes in (1, 2, 10, 30, MAX_START_WINDOW_MINUTES):
        window = timedelta(minutes=minutes)
        offsets = [start_offset(dag_id, minutes) for dag_id in FLEET_IDS]
        assert all(timedelta(0) <= o < window for o in offsets), minutes
        assert all(o.microseconds == 0 for o in offsets)
        # the whole window is used: its last second and its first
        assert max(offsets) >= window * 0.99 - timedelta(seconds=1) and min(offsets) <= window * 0.01


def test_without_a_window_every_run_starts_at_its_tick():
    assert {start_offset(dag_id, 0) for dag_id in FLEET_IDS} == {timedelta(0)}
    assert PipelineConfig.model_validate(_config()).start_offset == timedelta(0)


def test_5000_configs_at_one_tick_with_a_30_minute_window_spread_within_a_few_percent_of_uniform():
    window = timedelta(minutes=30)
    offsets = [start_offset(dag_id, 30) for dag_id in FLEET_IDS]
    distance = _uniformity(offsets, window)
    per_minute = [0] * 30
    for offset in offsets:
        per_minute[int(offset.total_seconds() // 60)] += 1
    even = len(offsets) / 30
    # KS distance at 5,000 uniform draws: 0.019 at the 95th percentile; the ids are fixed, so the
    # figure is too (0.009 for these).
    assert distance < 0.02, f"cumulative starts stray {distance:.1%} from even"
    assert max(abs(count - even) / even for count in per_minute) < 0.2, per_minute
    # The same ids without a window: one burst at the tick.
    assert _uniformity([timedelta(0)] * 10, window) == 1.0


def test_the_offset_is_the_same_in_other_processes_whatever_their_hash_seed():
    expected = {dag_id: int(start_offset(dag_id, 30).total_seconds()) for dag_id in FLEET_IDS[:500]}
    code = (
        "import json, sys\n"
        "from customer_pipelines.models import start_offset\n"
        "ids = json.load(sys.stdin)\n"
        "print(json.dumps({i: int(start_offset(i, 30).total_seconds()) for i in ids}))\n"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": os.pathsep.join(sys.path)}
        out = subprocess.run(
            [sys.executable, "-c", code], input=json.dumps(list(expected)), env=env, capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == expected


def test_the_offset_is_the_same_for_a_config_whatever_the_shard_count_and_in_a_workers_parse(
    monkeypatch, tmp_path, fleet_snapshot_rows
):
    customers, configs = fleet_snapshot_rows
    windowed = []
    for row in configs:  # a window shorter than each config's own schedule allows
        gap = shortest_cron_gap(PipelineConfig.model_validate(row).schedule_cron) if _valid(row) else None
        if gap is not None and gap > timedelta(minutes=30):
            row["start_window_minutes"] = 30
            windowed.append(f"{row['customer_id']}.{row['config_id']}")
    assert len(windowed) > 50
    path = snapshot.write_snapshot(tmp_path / "snap" / "configs.sqlite", customers, configs, source="t")
    monkeypatch.setenv("CP_SNAPSHOT_PATH", str(path))
    monkeypatch.setenv("CP_STATE_DIR", str(tmp_path / "state"))

    def offsets_with(shards: int) -> dict[str, timedelta]:
        monkeypatch.setenv("CP_FLEET_SHARDS", str(shards))
        get_settings.cache_clear()
        return {dag_id: dag.timetable.start_offset for dag_id, dag in run_fleet_files().items()}

    one, many = offsets_with(1), offsets_with(5)
    assert set(windowed) <= set(one) and one == many
    assert {dag_id: one[dag_id] for dag_id in windowed} == {d: start_offset(d, 30) for d in windowed}
    assert len({one[dag_id] for dag_id in windowed}) > len(windowed) * 0.9  # spread, not one value
    # A worker's parse (one DAG, under its parsing context) gives that DAG the same offset.
    target = windowed[len(windowed) // 2]
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", target)
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "run_pipeline")
    worker = offsets_with(5)
    assert worker == {target: one[target]}


def _valid(row: dict[str, Any]) -> bool:
    try:
        PipelineConfig.model_validate(row)
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(
    ("cron", "minutes", "shortest"),
    [("*/5 * * * *", 5, "5"), ("0 * * * *", 60, "60"), ("0 0,1 * * *", 90, "60"), ("0 2 * * *", 720, None)],
)
def test_a_window_as_long_as_the_schedules_shortest_interval_is_refused_naming_the_field(cron, minutes, shortest):
    row = _config(schedule_cron=cron, start_window_minutes=minutes)
    if shortest is None:
        assert PipelineConfig.model_validate(row).start_window_minutes == minutes
        return
    with pytest.raises(ValidationError) as caught:
        PipelineConfig.model_validate(row)
    message = str(caught.value)
    assert "start_window_minutes" in message and f"({shortest} minutes of {cron!r})" in message
    # one minute less than the interval is accepted
    accepted = PipelineConfig.model_validate({**row, "start_window_minutes": int(shortest) - 1})
    assert timedelta(0) <= accepted.start_offset < timedelta(minutes=int(shortest) - 1)


@pytest.mark.parametrize(("value", "why"), [(-1, "greater than or equal to 0"), (721, "less than or equal to 720")])
def test_a_window_out_of_range_is_refused_naming_the_field(value, why):
    with pytest.raises(ValidationError) as caught:
        PipelineConfig.model_validate(_config(start_window_minutes=value))
    assert caught.value.errors()[0]["loc"] == ("start_window_minutes",) and why in str(caught.value)


def test_a_row_from_before_the_column_existed_has_no_window():
    config = PipelineConfig.model_validate(_config(start_window_minutes=None))
    assert (config.start_window_minutes, config.start_offset) == (0, timedelta(0))
