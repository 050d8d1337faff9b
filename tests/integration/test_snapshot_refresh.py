"""Refreshing the snapshot from BigQuery (the emulator): the guard against a refresh that would stop
much of the fleet at once, and one writer at a time."""

from __future__ import annotations

import threading
import time

import pytest

from customer_pipelines.seed import fleet_dataset, load_dataset
from customer_pipelines.snapshot import RefreshGuard, RefreshRefused, Snapshot, refresh_lock, refresh_snapshot

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
