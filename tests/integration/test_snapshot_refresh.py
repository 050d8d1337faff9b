"""Refreshing the snapshot from BigQuery (the emulator): the guard against a refresh that would stop
much of the fleet at once, one writer at a time, and the incremental refresh (only the configs
changed since the watermark, no new file when nothing changed, the DAG ids that may differ, a
periodic full refresh)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from customer_pipelines.models import dag_id_for
from customer_pipelines.seed import Dataset, config_row, customer_rows, fleet_dataset, load_dataset
from customer_pipelines.snapshot import (
    RefreshGuard,
    RefreshRefused,
    RefreshResult,
    Snapshot,
    refresh_lock,
    refresh_snapshot,
)
from tests_support import rows_of_customer

pytestmark = pytest.mark.integration


def test_a_refresh_that_would_stop_most_of_the_fleet_is_refused_until_forced(store, tmp_path):
    fleet = fleet_dataset(12, seed=11)
    load_dataset(store, fleet)
    path = tmp_path / "configs.sqlite"
    refresh_snapshot(store, path)
    with Snapshot(path) as snap:
        running = set(snap.anchors())
        written_at = snap.meta["written_at"]
    assert len(running) > 20
    guard = RefreshGuard(share=0.25, min_dags=5)
    customer_ids = [c["customer_id"] for c in fleet.customers]

    # A query that returns nothing (here: every config of the fleet gone) must not empty Airflow.
    store.query("queries/delete_customers.sql", {"customer_ids": customer_ids})
    fleet_running = {d for d in running if d.split(".")[0] in customer_ids}  # other tests share the emulator
    with pytest.raises(RefreshRefused, match=rf"would stop {len(fleet_running)} of {len(running)} running DAGs"):
        refresh_snapshot(store, path, guard=guard)
    with Snapshot(path) as snap:  # the last good generation is still served, untouched
        assert snap.meta["written_at"] == written_at and set(snap.anchors()) == running

    # A change within the guard's bounds goes through; a person forces a large one.
    load_dataset(store, fleet)
    refresh_snapshot(store, path, guard=guard)
    store.query("queries/delete_customers.sql", {"customer_ids": customer_ids[:1]})
    refresh_snapshot(store, path, guard=RefreshGuard(share=0.25, min_dags=len(running)))
    store.query("queries/delete_customers.sql", {"customer_ids": customer_ids})
    refresh_snapshot(store, path, guard=guard, force=True)
    with Snapshot(path) as snap:
        assert not set(snap.anchors()) & fleet_running


def test_one_writer_holds_the_snapshot_at_a_time(tmp_path):
    path = tmp_path / "configs.sqlite"
    order: list[str] = []

    def second() -> None:
        with refresh_lock(path, timeout=10):
            order.append("second")

    with refresh_lock(path):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.6)
        order.append("first done")
    thread.join(timeout=10)
    assert order == ["first done", "second"]
    with refresh_lock(path), pytest.raises(TimeoutError, match="held by another syncer"):  # noqa: SIM117
        with refresh_lock(path, timeout=0.5):
            pass


# -- incremental refresh -------------------------------------------------------------------------

HOUR = timedelta(hours=1)
ACTIVE, NO_PLAN, LAPSED = "cust_inc_active", "cust_inc_noplan", "cust_inc_lapsed"


def _load_awkward_fleet(store: Any) -> datetime:
    """Three customers of three configs each: one with a subscription in force, one that never had
    one (the LEFT JOIN's NULL plan) and one whose subscription expired yesterday."""
    now = datetime.now(UTC)
    data = Dataset()
    for customer_id in (ACTIVE, NO_PLAN, LAPSED):
        customer, subscription = customer_rows(customer_id, f"{customer_id} Inc", "STARTER", now=now)
        data.customers.append(customer)
        if customer_id == LAPSED:
            data.subscriptions.append({**subscription, "valid_until": now - timedelta(days=1)})
        elif customer_id == ACTIVE:
            data.subscriptions.append(subscription)
        data.configs += [
            config_row(
                f"inc_{n}", customer_id, f"inc {n}", "GCP", "COST", "cost_billing", f"{n} 2 * * *", "UTC", now=now
            )
            for n in range(3)
        ]
    load_dataset(store, data)
    return now


def _refresh(store: Any, path: Path, **kwargs: Any) -> RefreshResult:
    return refresh_snapshot(store, path, full_every=kwargs.pop("full_every", HOUR), **kwargs)


def _row(path: Path, customer_id: str, config_id: str) -> Any:
    with Snapshot(path) as snap:
        return snap.config_by_dag_id(dag_id_for(customer_id, config_id))


def _latest(store: Any, customer_id: str, config_id: str) -> dict[str, Any]:
    rows = [r for r in rows_of_customer(store, "customer_pipeline_configs", customer_id) if r["config_id"] == config_id]
    return max(rows, key=lambda r: (r["version"], r["updated_at"]))


def _append_version(store: Any, row: dict[str, Any], **changes: Any) -> None:
    """A config's next version, streamed in as the API writes it."""
    store.insert_rows("customer_pipeline_configs", [{**row, "version": row["version"] + 1, **changes}])


def test_edits_and_deletes_arrive_incrementally_with_only_their_dag_ids_and_a_no_op_writes_nothing(store, tmp_path):
    _load_awkward_fleet(store)
    path = tmp_path / "configs.sqlite"
    first = _refresh(store, path)
    assert first.full and first.changed_dag_ids is None
    with Snapshot(path) as snap:
        assert snap.customer(NO_PLAN).plan is None and snap.customer(LAPSED).plan is None
        assert snap.config_by_dag_id(dag_id_for(NO_PLAN, "inc_0")).runnable_since is None  # held: no plan
        assert snap.config_by_dag_id(dag_id_for(ACTIVE, "inc_0")).runnable_since is not None

    # A round with nothing changed: no new generation.
    inode, generation = path.stat().st_ino, first.generation
    noop = _refresh(store, path)
    assert (noop.full, noop.written, noop.changed_dag_ids) == (False, False, frozenset())
    assert path.stat().st_ino == inode and noop.generation == generation

    # An edit in BigQuery (the pause statement appends a version): only its DAG is reported.
    anchor = _row(path, ACTIVE, "inc_1").runnable_since
    store.query(
        "queries/set_config_active.sql",
        {"customer_id": ACTIVE, "config_id": "inc_0", "is_active": False, "updated_by": "test"},
    )
    edited = _refresh(store, path)
    assert not edited.full and edited.written and edited.generation == generation + 1
    assert edited.changed_dag_ids == {dag_id_for(ACTIVE, "inc_0")}
    paused = _row(path, ACTIVE, "inc_0")
    assert paused.row["is_active"] is False and paused.runnable_since is None
    assert _row(path, ACTIVE, "inc_1").runnable_since == anchor

    # A soft delete (a version with deleted_at set) arrives and removes the config.
    _append_version(store, _latest(store, ACTIVE, "inc_2"), deleted_at=datetime.now(UTC), updated_at=datetime.now(UTC))
    deleted = _refresh(store, path)
    assert deleted.changed_dag_ids == {dag_id_for(ACTIVE, "inc_2")}
    assert _row(path, ACTIVE, "inc_2") is None

    # Read again within the overlap: nothing changes, nothing is written; a full read agrees.
    inode = path.stat().st_ino
    assert not _refresh(store, path).written
    forced = _refresh(store, path, force=True)
    assert forced.full and not forced.written and forced.changed_dag_ids == frozenset()
    assert path.stat().st_ino == inode


def test_a_customer_reactivated_after_hours_of_no_op_refreshes_is_anchored_at_the_last_confirmation(store, tmp_path):
    _load_awkward_fleet(store)
    path = tmp_path / "configs.sqlite"
    store.query("queries/set_customer_status.sql", {"customer_id": ACTIVE, "status": "SUSPENDED"})
    t0 = datetime.now(UTC)
    _refresh(store, path, now=t0, full_every=24 * HOUR)
    assert _row(path, ACTIVE, "inc_0").runnable_since is None
    for hours in (1, 2, 3):  # hours of rounds that change nothing: no file written
        assert not _refresh(store, path, now=t0 + hours * HOUR, full_every=24 * HOUR).written
    store.query("queries/set_customer_status.sql", {"customer_id": ACTIVE, "status": "ACTIVE"})
    result = _refresh(store, path, now=t0 + 3 * HOUR + timedelta(minutes=1), full_every=24 * HOUR)
    assert not result.full
    assert result.changed_dag_ids == {dag_id_for(ACTIVE, f"inc_{n}") for n in range(3)}
    # Anchored when the snapshot last confirmed the customer suspended, not when it was written.
    assert _row(path, ACTIVE, "inc_0").runnable_since == t0 + 3 * HOUR


def test_the_periodic_full_refresh_picks_up_a_row_the_incremental_read_cannot_see(store, tmp_path):
    _load_awkward_fleet(store)
    path = tmp_path / "configs.sqlite"
    t0 = datetime.now(UTC)
    _refresh(store, path, now=t0)
    # A version written by hand with an old updated_at: before the watermark minus the overlap.
    _append_version(store, _latest(store, ACTIVE, "inc_1"), display_name="by hand", updated_at=t0 - timedelta(days=2))
    # No overlap: the configs' own first versions were loaded just before the watermark, and a
    # config with any version inside the read window is read whole (its latest version).
    missed = _refresh(store, path, now=t0 + timedelta(minutes=30), overlap=timedelta(0))
    assert not missed.full and not missed.written
    assert _row(path, ACTIVE, "inc_1").row["display_name"] == "inc 1"
    full = _refresh(store, path, now=t0 + HOUR)
    assert full.full and full.written and full.changed_dag_ids == {dag_id_for(ACTIVE, "inc_1")}
    assert _row(path, ACTIVE, "inc_1").row["display_name"] == "by hand"
