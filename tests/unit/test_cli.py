"""cli.py: the commands as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from customer_pipelines import cli

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_validate_prints_each_hostile_row_on_one_line(
    write_snap, demo_customers, demo_configs, tmp_path: Path, monkeypatch, capsys
):
    template: dict[str, Any] = demo_configs[0]
    hostile = [
        {**template, "config_id": "cfg\nline2", "customer_id": "cust\x1b[31m"},
        {**template, "config_id": "cfg_tz", "timezone": "UTC\t" + "z" * 1_000_000},
    ]
    monkeypatch.setenv("CP_SNAPSHOT_PATH", str(write_snap(demo_customers, [*demo_configs, *hostile])))
    monkeypatch.setenv("CP_STATE_DIR", str(tmp_path / "state"))

    assert cli.main(["validate"]) == 1

    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("2 customer pipeline problem(s)")
    assert len(lines) == 3, lines
    assert all(line.isprintable() and len(line) < 2_000 for line in lines)
    assert lines[1].startswith("- config 'cfg\\nline2' (customer 'cust\\x1b[31m'): ")


def _users_shell(home: Path, **variables: str) -> dict[str, str]:
    """A user's shell: PYTHONPATH=plugins and a home of its own, none of the stack's variables."""
    stack_variables = ("AIRFLOW", "_AIRFLOW", "CP_", "BIGQUERY_EMULATOR_HOST", "PYTHONPATH")
    env = {name: value for name, value in os.environ.items() if not name.startswith(stack_variables)}
    return {**env, "HOME": str(home), "PYTHONPATH": "plugins", **variables}


def test_a_command_run_by_hand_takes_the_stacks_recorded_settings_and_keeps_out_of_home(
    demo_snapshot_path: Path, tmp_path: Path
):
    from customer_pipelines.local.environment import record_stack_environment

    state, home = tmp_path / "state", tmp_path / "home"
    home.mkdir()
    # What `stack up` records: here only where the snapshot is (no service is needed to read it).
    record_stack_environment({"CP_SNAPSHOT_PATH": str(demo_snapshot_path), "PATH": "/nowhere"}, state)

    proc = subprocess.run(
        [sys.executable, "-m", "customer_pipelines", "validate"],
        cwd=REPO_ROOT,
        env=_users_shell(home, CP_STATE_DIR=str(state)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == "every config in the snapshot is valid"
    assert not (home / "airflow").exists(), "the command read or created ~/airflow"
    assert (state / "airflow").is_dir(), "Airflow's home is the state directory's"


def test_a_variable_the_user_sets_wins_over_the_recorded_one(demo_snapshot_path: Path, tmp_path: Path):
    from customer_pipelines.local.environment import record_stack_environment

    state, home = tmp_path / "state", tmp_path / "home"
    home.mkdir()
    record_stack_environment({"CP_SNAPSHOT_PATH": str(tmp_path / "absent.sqlite")}, state)

    proc = subprocess.run(
        [sys.executable, "-m", "customer_pipelines", "snapshot", "show"],
        cwd=REPO_ROOT,
        env=_users_shell(home, CP_STATE_DIR=str(state), CP_SNAPSHOT_PATH=str(demo_snapshot_path)),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["path"] == str(demo_snapshot_path)


def test_backfill_commands_missing_their_arguments_say_which_before_touching_anything(
    tmp_path: Path, monkeypatch, capsys
):
    monkeypatch.setenv("CP_STATE_DIR", str(tmp_path / "state"))
    assert cli.main(["backfill", "create", "--customer", "cust_a", "--from", "2026-12-01T00:00:00Z"]) == 1
    assert "needs --from and --to" in capsys.readouterr().err
    assert cli.main(["backfill", "cancel", "--customer", "cust_a"]) == 1
    assert "backfill cancel needs --id" in capsys.readouterr().err
