"""runs/mirror.py: run-state transitions -> append-only rows, spooled to disk while BigQuery fails.

The store is a fake: a BigQuery outage (or a rejected insert) is a fault a unit test cannot cause
with the real client, so the fake's ``insert_rows`` can be told to fail. Rejected rows in particular
cannot be caused on the emulator: where BigQuery answers insertAll with per-row ``insertErrors``
(reason ``invalid``), bqemulator answers 500 for the whole request."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from customer_pipelines.bigquery.store import RejectedRows
from customer_pipelines.runs.mirror import (
    RECORD_BACKLOG_LIMIT,
    RUNS_TABLE,
    RunIdentity,
    RunState,
    RunStateMirror,
    event_key,
    run_event,
)


class FakeStore:
    """BigQueryStore.insert_rows' contract: rows refused for their content (``rejecting``) or for a
    transient reason (``throttling``) are raised in RejectedRows; every other row is written."""

    def __init__(self) -> None:
        self.failing = False
        self.rejecting: set[str] = set()
        self.throttling: set[str] = set()
        self.calls: list[tuple[str, list[dict[str, Any]], list[str] | None]] = []

    def insert_rows(self, table: str, rows: list[dict[str, Any]], *, row_ids: list[str] | None = None) -> None:
        if self.failing:
            raise RuntimeError("BigQuery is unreachable")
        refused = {i: ["invalid: no such field: bogus"] for i, r in enumerate(rows) if r["event_key"] in self.rejecting}
        throttled = {i for i, r in enumerate(rows) if r["event_key"] in self.throttling}
        kept = [i for i in range(len(rows)) if i not in refused and i not in throttled]
        if kept:
            ids = [row_ids[i] for i in kept] if row_ids is not None else None
            self.calls.append((table, [dict(rows[i]) for i in kept], ids))
        if refused or throttled:
            raise RejectedRows("rejected", refused, throttled)

    @property
    def delivered_keys(self) -> list[str]:
        return [row["event_key"] for _, rows, _ in self.calls for row in rows]


def _identity(try_number: int | None = 1, run_id: str = "scheduled__2025-01-01T02:00:00+00:00") -> RunIdentity:
    return RunIdentity(
        config_id="acme_gcp_cost_daily",
        customer_id="cust_acme_001",
        dag_id="cust_acme_001.acme_gcp_cost_daily",
        run_id=run_id,
        task_id="run_pipeline",
        try_number=try_number,
        logical_date=datetime(2025, 1, 1, 2, tzinfo=UTC),
    )


_CLOCK = datetime(2025, 1, 1, 2, 0, tzinfo=UTC)


def _event(state: RunState, *, try_number: int = 1, seconds: int = 0) -> dict[str, Any]:
    return run_event(_identity(try_number), state, source="test", event_time=_CLOCK + timedelta(seconds=seconds))


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def spool(tmp_path: Path) -> Path:
    return tmp_path / "spool"


@pytest.fixture
def mirror(store: FakeStore, spool: Path) -> RunStateMirror:
    return RunStateMirror(store, spool)


def test_event_key_is_deterministic_and_differs_by_state_try_and_run():
    key = event_key(_identity(), RunState.RUNNING)
    assert key == event_key(_identity(), RunState.RUNNING)
    assert len(key) == 40
    assert key != event_key(_identity(), RunState.COMPLETED)
    assert key != event_key(_identity(try_number=2), RunState.RUNNING)
    assert key != event_key(_identity(run_id="manual__x"), RunState.RUNNING)
    assert run_event(_identity(), RunState.RUNNING, source="a")["event_key"] == key


def test_an_execution_of_a_run_has_keys_of_its_own_and_the_first_keeps_the_keys_it_had():
    import hashlib
    from dataclasses import replace

    first, cleared = _identity(try_number=None), replace(_identity(try_number=None), clear_number=1)
    # the key a first execution's event had before executions were numbered (spooled rows, reconcile)
    raw = "|".join([first.dag_id, first.run_id, "run_pipeline", "0", "QUEUED"])
    assert event_key(first, RunState.QUEUED) == hashlib.sha256(raw.encode()).hexdigest()[:40]
    assert event_key(cleared, RunState.QUEUED) != event_key(first, RunState.QUEUED)
    assert (first.execution_key, cleared.execution_key) == (first.run_key, f"{first.run_key}#1")
    assert run_event(cleared, RunState.QUEUED, source="a")["clear_number"] == 1


def test_each_mark_of_one_try_is_its_own_event_and_a_resent_mark_is_the_same_one():
    at = datetime(2025, 1, 1, 3, tzinfo=UTC)
    mark = run_event(_identity(), RunState.COMPLETED, source="m", event_time=at, each_occurrence=True)
    later = at + timedelta(seconds=1)
    again = run_event(_identity(), RunState.COMPLETED, source="m", event_time=later, each_occurrence=True)
    operator = run_event(_identity(), RunState.COMPLETED, source="operator", event_time=at)
    assert len({mark["event_key"], again["event_key"], operator["event_key"]}) == 3
    assert (
        run_event(_identity(), RunState.COMPLETED, source="m", event_time=at, each_occurrence=True)["event_key"]
        == (mark["event_key"])
    )


def test_run_event_row_carries_identity_state_duration_and_error():
    started = datetime(2025, 1, 1, 2, tzinfo=UTC)
    row = run_event(
        _identity(),
        RunState.FAILED,
        source="operator",
        started_at=started,
        ended_at=started + timedelta(seconds=90),
        error=ValueError("boom" * 2000),
    )
    assert row["run_key"] == "cust_acme_001.acme_gcp_cost_daily/scheduled__2025-01-01T02:00:00+00:00"
    assert row["state"] == "FAILED"
    assert row["duration_seconds"] == 90
    assert row["error_type"] == "ValueError"
    assert len(row["error_message"]) == 4000
    assert row["event_time"] == started + timedelta(seconds=90)


def test_record_delivers_to_the_runs_table_keyed_by_event_key(mirror, store):
    row = _event(RunState.RUNNING)
    assert mirror.record(row) is True
    [(table, rows, row_ids)] = store.calls
    assert table == RUNS_TABLE
    assert row_ids == [row["event_key"]]
    assert rows[0]["state"] == "RUNNING"
    assert rows[0]["event_time"] == row["event_time"].isoformat()
    assert mirror.backlog() == 0


def test_failing_store_makes_record_return_false_and_spools_the_row_as_a_file(mirror, store, spool):
    store.failing = True
    row = _event(RunState.RUNNING)
    assert mirror.record(row) is False  # and, above all, no exception
    files = sorted(spool.glob("*.json"))
    assert len(files) == 1
    assert row["event_key"] in files[0].name
    assert json.loads(files[0].read_text())["event_key"] == row["event_key"]
    assert not list(spool.glob("*.tmp"))
    assert mirror.backlog() == 1


def test_spooled_rows_stay_spooled_while_the_store_keeps_failing(mirror, store):
    store.failing = True
    for n, state in enumerate((RunState.QUEUED, RunState.RUNNING, RunState.FAILED)):
        assert mirror.record(_event(state, seconds=n)) is False
    assert mirror.backlog() == 3
    assert store.calls == []


def test_next_successful_record_delivers_the_spool_first_then_the_new_row_and_empties_it(mirror, store, spool):
    store.failing = True
    first = _event(RunState.RUNNING, seconds=0)
    second = _event(RunState.RETRYING, seconds=1)
    mirror.record(first)
    mirror.record(second)

    store.failing = False
    third = _event(RunState.RUNNING, try_number=2, seconds=2)
    assert mirror.record(third) is True

    [(_, rows, row_ids)] = store.calls
    assert row_ids == [first["event_key"], second["event_key"], third["event_key"]]
    assert [r["event_key"] for r in rows] == row_ids
    assert mirror.backlog() == 0
    assert list(spool.iterdir()) == []


def test_drain_delivers_the_spool_and_empties_it(mirror, store):
    store.failing = True
    keys = []
    for n, state in enumerate(RunState):
        row = _event(state, seconds=n)
        assert mirror.record(row) is False
        keys.append(row["event_key"])
    assert mirror.backlog() == len(RunState)

    store.failing = False
    assert mirror.drain() == len(RunState)
    assert store.delivered_keys == keys
    assert mirror.backlog() == 0
    assert mirror.drain() == 0
    assert len(store.calls) == 1


def test_drain_delivers_at_most_limit_rows_oldest_first(mirror, store):
    store.failing = True
    keys = []
    for n in range(5):
        row = _event(RunState.RUNNING, try_number=n + 1, seconds=n)
        mirror.record(row)
        keys.append(row["event_key"])
    store.failing = False
    assert mirror.drain(limit=2) == 2
    assert store.delivered_keys == keys[:2]
    assert mirror.backlog() == 3


def test_failed_drain_keeps_the_spool(mirror, store):
    store.failing = True
    mirror.record(_event(RunState.RUNNING))
    with pytest.raises(RuntimeError):
        mirror.drain()
    assert mirror.backlog() == 1


def test_backlog_counts_spooled_rows_and_is_zero_without_a_spool_dir(mirror, store, spool):
    assert not spool.exists()
    assert mirror.backlog() == 0
    store.failing = True
    mirror.record(_event(RunState.RUNNING))
    mirror.record(_event(RunState.COMPLETED))
    assert mirror.backlog() == 2


def test_the_same_transition_spooled_twice_is_one_file(mirror, store):
    store.failing = True
    row = _event(RunState.COMPLETED)
    mirror.record(row)
    mirror.record(row)
    assert mirror.backlog() == 1


def test_record_never_raises_when_another_worker_drains_the_spool_concurrently(mirror, store):
    store.failing = True
    mirror.record(_event(RunState.RUNNING))
    store.failing = False

    # Simulates the race deterministically: another process empties the spool right after this
    # mirror listed it (it cannot be timed reliably with two real processes in a unit test).
    listed = mirror._spooled

    def listing_then_other_worker_drains() -> list[Path]:
        paths = listed()
        for path in paths:
            path.unlink()
        return paths

    mirror._spooled = listing_then_other_worker_drains
    assert mirror.record(_event(RunState.COMPLETED)) is True


def test_record_never_raises_on_an_unreadable_spool_file(mirror, store, spool):
    spool.mkdir()
    (spool / "20250101T000000000000-deadbeef.json").write_text("")
    assert mirror.record(_event(RunState.RUNNING)) in (True, False)


def test_a_task_carries_at_most_the_backlog_limit_of_spooled_rows(mirror, store):
    store.failing = True
    for n in range(RECORD_BACKLOG_LIMIT + 5):
        mirror.record(_event(RunState.RUNNING, try_number=n + 1, seconds=n))
    store.failing = False

    assert mirror.record(_event(RunState.COMPLETED, seconds=999)) is True

    [(_, rows, _)] = store.calls
    assert len(rows) == RECORD_BACKLOG_LIMIT + 1
    assert mirror.backlog() == 5  # the newest five wait for the next write or the syncer's drain


def test_a_spooled_row_bigquery_refuses_is_set_aside_and_no_longer_blocks_the_others(mirror, store, spool):
    store.failing = True
    poison, good = _event(RunState.RUNNING, seconds=0), _event(RunState.COMPLETED, seconds=1)
    mirror.record(poison)
    mirror.record(good)
    store.failing = False
    store.rejecting = {poison["event_key"]}

    assert mirror.drain() == 2

    assert store.delivered_keys == [good["event_key"]]
    assert mirror.backlog() == 0 and mirror.rejected() == 1
    kept = json.loads((spool / "rejected" / f"{poison['event_key']}.json").read_text())
    assert kept["row"]["event_key"] == poison["event_key"] and "no such field" in kept["reasons"][0]


def test_a_new_row_bigquery_refuses_is_kept_aside_and_record_says_it_was_not_written(mirror, store):
    row = _event(RunState.RUNNING)
    store.rejecting = {row["event_key"]}

    assert mirror.record(row) is False

    assert store.calls == [] and mirror.backlog() == 0 and mirror.rejected() == 1


def test_a_row_refused_for_a_transient_reason_stays_spooled_and_goes_with_the_next_delivery(mirror, store):
    throttled, other = _event(RunState.RUNNING), _event(RunState.COMPLETED, seconds=5)
    store.throttling = {throttled["event_key"]}
    assert mirror.record(throttled) is False
    assert mirror.record(other) is True
    assert mirror.backlog() == 1 and mirror.rejected() == 0  # never set aside
    store.throttling = set()
    assert mirror.drain() == 1
    assert mirror.backlog() == 0
    assert store.delivered_keys == [other["event_key"], throttled["event_key"]]


def test_rows_set_aside_are_replayed_into_the_spool_and_delivered_once_fixed(mirror, store):
    poison = _event(RunState.RUNNING)
    store.rejecting = {poison["event_key"]}
    mirror.record(poison)
    assert mirror.rejected() == 1 and mirror.backlog() == 0
    store.rejecting = set()  # the cause was fixed (say, the column added)
    assert mirror.replay_rejected() == 1
    assert mirror.rejected() == 0 and mirror.backlog() == 1
    assert mirror.drain() == 1
    assert store.delivered_keys == [poison["event_key"]]


def test_the_mirror_stores_a_run_types_value_not_the_enum_members_name():
    # What a task's context holds (the Task SDK's model; its str() is "DagRunType.BACKFILL"), and
    # what the scheduler's listeners get.
    from airflow.sdk.api.datamodels._generated import DagRunType as TaskSdkRunType
    from airflow.utils.types import DagRunType

    from customer_pipelines.runs.mirror import RunIdentity

    for member in (TaskSdkRunType.BACKFILL, TaskSdkRunType.SCHEDULED, DagRunType.BACKFILL_JOB, DagRunType.MANUAL):
        assert RunIdentity("c", "cust", "cust.c", "r", run_type=member).run_type == member.value
    assert RunIdentity("c", "cust", "cust.c", "r", run_type="backfill").run_type == "backfill"
    assert RunIdentity("c", "cust", "cust.c", "r").run_type is None
