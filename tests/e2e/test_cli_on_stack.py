"""The command line as a user runs it against the running stack: `PYTHONPATH=plugins python -m
customer_pipelines ...` from the checkout, in a shell with none of the stack's variables, a home of
its own, and only CP_STATE_DIR (this stack's state directory is not the default one)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO_DAG_ID = "cust_acme_001.acme_gcp_cost_daily"


def _users_shell(state_dir: Path, home: Path) -> dict[str, str]:
    stack_variables = ("AIRFLOW", "_AIRFLOW", "CP_", "BIGQUERY_EMULATOR_HOST", "PYTHONPATH")
    env = {name: value for name, value in os.environ.items() if not name.startswith(stack_variables)}
    env.update(HOME=str(home), PYTHONPATH="plugins", CP_STATE_DIR=str(state_dir))
    return env


def _run_as_a_user(state_dir: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "customer_pipelines", *args],
        cwd=REPO_ROOT,
        env=_users_shell(state_dir, home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _wait_for_run_on_a_busy_machine(client, run_id: str, timeout: float = 600) -> None:
    """Measured here on a loaded 2-core machine: a poll of the API server can take over 30 s and a
    run over 4 minutes; such a slow poll is retried until the deadline."""
    deadline = time.monotonic() + timeout
    state = "unknown"
    while time.monotonic() < deadline:
        try:
            state = client.dag_run(DEMO_DAG_ID, run_id)["state"]
        except (TimeoutError, urllib.error.URLError):
            continue
        if state in ("success", "failed"):
            return
        time.sleep(2)
    raise AssertionError(f"run {run_id} did not finish in {timeout:.0f} s (state {state})")


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def _check_validate(out: str, info) -> None:
    assert out.strip() == "every config in the snapshot is valid"


def _check_snapshot_show(out: str, info) -> None:
    shown = json.loads(out)
    assert shown["path"] == str(info.settings.snapshot_file)
    assert int(shown["configs"]) >= 4 and shown["source"] == f"bigquery:{info.settings.bq_project}.customers_metadata"


def _check_reconcile(out: str, info) -> None:
    # The demo DAG has run (the stack fixture's other tests trigger it; this test triggers it too).
    found = re.match(r"spooled transitions delivered: \d+; tries checked: (\d+); missing transitions written: \d+", out)
    assert found, out
    assert int(found[1]) >= 1, "reconcile saw no task instance of the last hour: not Airflow's database?"


def _check_snapshot_refresh(out: str, info) -> None:
    assert re.match(
        rf"snapshot {re.escape(str(info.settings.snapshot_file))}: \d+ configs, \d+ customers, 0 invalid", out
    )
    # As the syncer's rounds: the changes since the syncer's own full read, not every config again.
    assert "read the configs changed since the last refresh" in out, out


def _check_full_snapshot_refresh(out: str, info) -> None:
    assert re.match(rf"snapshot {re.escape(str(info.settings.snapshot_file))}: \d+ configs", out), out
    assert "read every config" in out, out


_WINDOW = ("--from", "-PT30H", "--to", "-PT1H", "--dry-run")
_HOURS = {"-PT30H": -timedelta(hours=30), "-PT1H": -timedelta(hours=1)}


def _check_ticks(out: str, info) -> None:
    # the demo customer's ticks without a successful run in the last day, per config (maybe none)
    assert re.match(r"cust_acme_001: \d+ tick\(s\) without a successful run since ", out), out


def _check_backfill_dry_run(out: str, info) -> None:
    lines = out.splitlines()
    # Airflow may log a warning to stdout first (its plugins' file discovery, loading the DAG)
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["config", "runs"])
    assert lines[header + 1].split()[0] == "acme_gcp_cost_daily", out  # a daily config: its tick of the last 30 hours
    assert re.search(r"\d+ run\(s\); today's quota left: (\d+|unlimited).*\(dry run: nothing created\)", out), out


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["validate"], _check_validate),
        (["ticks", "--customer", "cust_acme_001"], _check_ticks),
        (
            [*("backfill", "create", "--customer", "cust_acme_001", "--config", "acme_gcp_cost_daily"), *_WINDOW],
            _check_backfill_dry_run,
        ),
        (["snapshot", "show"], _check_snapshot_show),
        (["reconcile", "--hours", "1"], _check_reconcile),
        (["snapshot", "refresh"], _check_snapshot_refresh),
        (["snapshot", "refresh", "--full"], _check_full_snapshot_refresh),
    ],
    ids=["validate", "ticks", "backfill-dry-run", "snapshot-show", "reconcile", "snapshot-refresh", "full-refresh"],
)
def test_a_read_only_command_works_against_the_stack_with_no_extra_environment_and_leaves_home_alone(
    stack, home, args, check
):
    info, client = stack
    if args[0] == "reconcile":  # a try in the last hour for reconcile to find in Airflow's database
        client.wait_for_dags([DEMO_DAG_ID], timeout=240)
        _wait_for_run_on_a_busy_machine(client, client.trigger(DEMO_DAG_ID)["dag_run_id"])

    if args[0] == "backfill":  # a window of the last hours, in ISO times
        client.wait_for_dags([DEMO_DAG_ID], timeout=240)
        now = datetime.now(UTC)
        args = [now + _HOURS[a] if a in _HOURS else a for a in args]
        args = [a.isoformat() if isinstance(a, datetime) else a for a in args]
    proc = _run_as_a_user(info.settings.state_dir, home, *args)

    assert proc.returncode == 0, f"stdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-4000:]}"
    check(proc.stdout, info)
    assert not (home / "airflow").exists(), "the command read or created ~/airflow"
