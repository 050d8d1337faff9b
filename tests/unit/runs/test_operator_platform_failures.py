"""Failures of the platform through the task itself, each mirrored with error_type PLATFORM (retried,
never counted toward auto-pause) and no RUNNING: a quota ledger behind a silent socket (issue 17 item
7: it accepts the connection and never answers) fails the try within
CP_QUOTA_DB_CONNECT_TIMEOUT_SECONDS; no readable snapshot and an unset CP_QUOTA_DB_URL (item 4)."""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from customer_pipelines.fleet.factory import build_dags
from customer_pipelines.runs.quota import QuotaLedgerError
from customer_pipelines.settings import get_parse_settings
from customer_pipelines.snapshot import Snapshot, write_snapshot

DAG_ID = "cust_acme_001.acme_gcp_cost_daily"


@pytest.fixture
def silent_ledger_url():
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)  # the kernel accepts; nobody answers
    try:
        yield f"postgresql://postgres:secret@127.0.0.1:{listener.getsockname()[1]}/customer_pipelines"
    finally:
        listener.close()


def _context(tick: datetime, *, try_number: int, max_tries: int) -> dict[str, Any]:
    run_id = f"scheduled__{tick.isoformat()}"
    ti = SimpleNamespace(dag_id=DAG_ID, run_id=run_id, task_id="run_pipeline", start_date=tick)
    ti.try_number, ti.max_tries = try_number, max_tries
    return {"ti": ti, "dag_run": SimpleNamespace(run_after=tick, run_type="scheduled"), "logical_date": tick}


def _demo_task(monkeypatch, customers, configs) -> tuple[Any, list[dict[str, Any]], Path]:
    """The demo DAG's task, built as a worker builds it from a snapshot of the demo rows (written to
    the settings' path), and the list every row it mirrors lands in instead of BigQuery."""
    recorded: list[dict[str, Any]] = []
    monkeypatch.setattr("customer_pipelines.runs.mirror.RunStateMirror.record", lambda self, row: recorded.append(row))
    snapshot_file = get_parse_settings().snapshot_file
    write_snapshot(snapshot_file, customers, configs, source="test")
    with Snapshot(snapshot_file) as snapshot:
        operator = build_dags(snapshot, get_parse_settings(), only_dag_id=DAG_ID).dags[DAG_ID].tasks[0]
    return operator, recorded, snapshot_file


@pytest.mark.parametrize(("try_number", "state"), [(1, "RETRYING"), (3, "FAILED")])
def test_a_try_against_a_silent_ledger_fails_within_the_connect_bound_as_the_platforms_failure(
    monkeypatch, tmp_path: Path, demo_customers, demo_configs, silent_ledger_url, try_number, state
):
    monkeypatch.setenv("CP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CP_QUOTA_DB_URL", silent_ledger_url)
    monkeypatch.setenv("CP_QUOTA_DB_CONNECT_TIMEOUT_SECONDS", "1")
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "127.0.0.1:9")
    operator, recorded, _ = _demo_task(monkeypatch, demo_customers, demo_configs)

    began = time.monotonic()
    with pytest.raises(QuotaLedgerError, match="CP_QUOTA_DB_CONNECT_TIMEOUT_SECONDS") as failure:
        operator.execute(_context(datetime(2026, 12, 2, 2, tzinfo=UTC), try_number=try_number, max_tries=2))
    waited = time.monotonic() - began

    assert waited < 3, f"the try waited {waited:.1f} s against a 1 s bound"
    assert "secret" not in str(failure.value)
    [ending] = recorded  # no RUNNING: the pipeline never started
    assert ending["state"] == state and ending["error_type"] == "PLATFORM"


@pytest.mark.parametrize("missing", ["snapshot", "ledger_url"])
def test_a_try_without_a_snapshot_or_a_ledger_url_is_the_platforms_failure(
    monkeypatch, tmp_path: Path, demo_customers, demo_configs, missing
):
    monkeypatch.setenv("CP_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", "127.0.0.1:9")
    if missing != "ledger_url":
        monkeypatch.setenv("CP_QUOTA_DB_URL", "postgresql://postgres@127.0.0.1:9/customer_pipelines")
    operator, recorded, snapshot_file = _demo_task(monkeypatch, demo_customers, demo_configs)
    if missing == "snapshot":
        snapshot_file.unlink()

    raised = "no readable config snapshot" if missing == "snapshot" else "CP_QUOTA_DB_URL is not set"
    with pytest.raises(Exception, match=raised):
        operator.execute(_context(datetime(2026, 12, 2, 2, tzinfo=UTC), try_number=1, max_tries=2))

    [ending] = recorded
    assert ending["state"] == "RETRYING" and ending["error_type"] == "PLATFORM"
