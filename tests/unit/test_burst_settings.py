"""The settings a burst depends on (issue 23): the ones shipped (the local stack's environment and
docker-compose.yaml) are the ones bench/burst.py's committed figures were taken with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from customer_pipelines.local.airflow import BURST_SETTINGS, airflow_env
from customer_pipelines.settings import Settings

REPO = Path(__file__).resolve().parents[2]
FIGURES = REPO / "bench" / "results" / "burst-plain-ours-200-1000.json"
"""The figures README *Burst* quotes."""


def test_the_shipped_burst_settings_are_the_ones_the_benchmarks_figures_were_taken_with(tmp_path, monkeypatch):
    for name in BURST_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    shipped = airflow_env(Settings(state_dir=tmp_path / "state"), "postgresql://127.0.0.1/airflow")
    ours = [case for case in json.loads(FIGURES.read_text())["cases"] if case["variant"] == "ours"]
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())["x-airflow-common"]["environment"]

    assert sorted(case["runs"] for case in ours) == [200, 1000]
    for name, value in BURST_SETTINGS.items():
        for case in ours:
            assert case["settings"].get(name) == value, (
                f"{FIGURES.name} ({case['runs']} runs) was measured with {name}={case['settings'].get(name)}"
            )
        assert shipped[name] == value, name
        assert str(compose.get(name)) == value, f"docker-compose.yaml ships {name}={compose.get(name)}"


def test_a_burst_setting_of_your_own_wins_over_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__PARALLELISM", "4")
    env = airflow_env(Settings(state_dir=tmp_path / "state"), "postgresql://127.0.0.1/airflow")
    assert env["AIRFLOW__CORE__PARALLELISM"] == "4"
    assert env["AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY"] == BURST_SETTINGS["AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY"]


@pytest.mark.parametrize(
    ("argv", "forks"),
    [
        (["airflow", "scheduler", "--skip-serve-logs"], True),
        (["airflow", "celery", "worker", "-q", "default"], True),
        (["airflow", "api-server"], False),
        (["airflow", "dag-processor"], False),
        (["airflow", "db", "migrate"], False),
        (["airflow", "celery", "flower"], False),
    ],
)
def test_only_the_processes_that_fork_tasks_preload_the_tasks_modules(argv, forks):
    from customer_pipelines.runs.preload import forks_tasks

    assert forks_tasks(argv) is forks


@pytest.mark.parametrize(("command", "preloaded"), [("scheduler", True), ("api-server", False)])
def test_airflow_started_as_a_scheduler_has_the_tasks_modules_before_it_forks_them(tmp_path, command, preloaded):
    """airflow_local_settings runs while Airflow initialises (before the LocalExecutor forks its
    workers): the scheduler holds every module of TASK_MODULES; another component none of ours."""
    import os
    import subprocess
    import sys

    from customer_pipelines.runs.preload import TASK_MODULES

    code = (
        "import json, sys\n"
        f"sys.argv = ['airflow', {command!r}]\n"
        "import airflow.settings\n"
        f"print(json.dumps([m for m in {list(TASK_MODULES)!r} if m in sys.modules]))\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "PYTHONPATH": str(REPO / "plugins")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    if preloaded:
        assert loaded == list(TASK_MODULES)
    else:
        assert [m for m in loaded if m.startswith("customer_pipelines")] == []
