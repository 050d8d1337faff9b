"""snapshot.refresh_snapshot by what changed: the configs changed since the watermark applied to a
copy of the last good generation, no new file when nothing changed, the DAG ids that may differ
(changed_dag_ids), and a periodic full refresh that converges on what an incremental read missed."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from customer_pipelines.models import dag_id_for
from customer_pipelines.snapshot import (
    RefreshGuard,
    RefreshRefused,
    Snapshot,
    patch_snapshot,
    refresh_snapshot,
)

HOUR = timedelta(hours=1)


class VersionLogStore:
    """What refresh_snapshot reads of a BigQueryStore, over an append-only version log of configs
    as BigQuery keeps it (the latest version of each config wins, deletes are versions too)."""

    def __init__(self, customers: list[dict[str, Any]], configs: list[dict[str, Any]]) -> None:
        self.customers = [dict(c) for c in customers]
        self.log = [{**c, "deleted_at": None} for c in configs]
        self.settings = SimpleNamespace(bq_project="demo-project", bq_dataset="customers_metadata")
        self.reads: Counter[str] = Counter()

    def _current(self) -> dict[tuple[str, str], dict[str, Any]]:
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for row in self.log:
            key = (row["customer_id"], row["config_id"])
            held = latest.get(key)
            if held is None or (row["version"], row["updated_at"]) >= (held["version"], held["updated_at"]):
                latest[key] = row
        return latest

    def current_configs(self) -> list[dict[str, Any]]:
        """The configs a full read returns, without counting as one."""
        return [
            {k: v for k, v in r.items() if k != "deleted_at"} for r in self._current().values() if not r["deleted_at"]
        ]

    def fetch_customers(self) -> list[dict[str, Any]]:
        self.reads["customers"] += 1
        return [dict(c) for c in self.customers]

    def fetch_configs(self) -> list[dict[str, Any]]:
        self.reads["full"] += 1
        return self.current_configs()

    def fetch_config_changes(self, since: datetime) -> list[dict[str, Any]]:
        self.reads["changes"] += 1
        keys = {(r["customer_id"], r["config_id"]) for r in self.log if r["updated_at"] > since}
        return [dict(row) for key, row in self._current().items() if key in keys]

    def edit(self, config_id: str, *, updated_at: datetime | None = None, **changes: Any) -> dict[str, Any]:
        """A new version of a config, written now (or at ``updated_at``)."""
        [row] = [r for k, r in self._current().items() if k[1] == config_id]
        new = {**row, **changes, "version": row["version"] + 1, "updated_at": updated_at or datetime.now(UTC)}
        self.log.append(new)
        return new

    def set_customer(self, customer_id: str, **changes: Any) -> None:
        self.customers = [{**c, **changes} if c["customer_id"] == customer_id else c for c in self.customers]


@pytest.fixture
def fleet(fleet_snapshot_rows) -> VersionLogStore:
    """~200 configs of 40 customers, among them lapsed subscriptions and a customer without any (the
    LEFT JOIN's NULL plan), each config last written a day ago."""
    customers, configs = fleet_snapshot_rows
    day_ago = datetime.now(UTC) - timedelta(days=1)
    return VersionLogStore(customers, [{**c, "updated_at": day_ago, "created_at": day_ago} for c in configs])


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "configs.sqlite"


def refresh(store: VersionLogStore, path: Path, **kwargs: Any):
    return refresh_snapshot(store, path, full_every=HOUR, **kwargs)


def _rows(path: Path) -> dict[str, tuple[Any, ...]]:
    with Snapshot(path) as snap:
        return {r.dag_id: (r.row, r.runnable_since) for r in snap.configs()}


def _runnable_config(store: VersionLogStore) -> dict[str, Any]:
    with_plan = {c["customer_id"] for c in store.customers if c["plan"] and c["status"] == "ACTIVE"}
    return next(r for r in store.current_configs() if r["customer_id"] in with_plan and r["is_active"])


def test_the_fixture_holds_the_awkward_customers(fleet):
    assert any(c["plan"] is None for c in fleet.customers), "a NULL plan from the LEFT JOIN"
    assert sum(c["plan"] is None for c in fleet.customers) > 1, "and lapsed subscriptions"


def test_a_first_refresh_is_full_and_reports_every_dag_as_unknown(fleet, path):
    result = refresh(fleet, path)
    assert result.full and result.written and result.changed_dag_ids is None and result.generation == 1
    with Snapshot(path) as snap:
        assert snap.meta["generation"] == "1" and snap.meta["refresh"] == "full"
        assert snap.meta["watermark"] and snap.meta["full_refresh_at"]


def test_a_refresh_that_finds_nothing_changed_writes_no_file_and_reports_no_dag(fleet, path):
    refresh(fleet, path)
    before = path.stat().st_ino
    for _ in range(3):
        result = refresh(fleet, path)
        assert not result.full and not result.written
        assert result.changed_dag_ids == frozenset() and result.generation == 1
    assert path.stat().st_ino == before and not path.with_name(path.name + ".prev").exists()
    assert fleet.reads["full"] == 1 and fleet.reads["changes"] == 3 and fleet.reads["customers"] == 4
    # A full refresh that finds nothing changed writes nothing either.
    forced = refresh(fleet, path, force=True)
    assert forced.full and not forced.written and forced.changed_dag_ids == frozenset()
    assert path.stat().st_ino == before


def test_an_edited_config_arrives_incrementally_and_only_its_dag_is_reported(fleet, path):
    refresh(fleet, path)
    before = _rows(path)
    target = _runnable_config(fleet)
    dag_id = dag_id_for(target["customer_id"], target["config_id"])
    fleet.edit(target["config_id"], display_name="renamed")
    result = refresh(fleet, path)
    assert not result.full and result.written and result.generation == 2
    assert result.changed_dag_ids == {dag_id}
    after = _rows(path)
    assert after[dag_id][0]["display_name"] == "renamed"
    assert after[dag_id][1] == before[dag_id][1], "same schedule: the anchor is kept"
    assert {d: r for d, r in after.items() if d != dag_id} == {d: r for d, r in before.items() if d != dag_id}
    with Snapshot(path) as snap:
        assert snap.meta["generation"] == "2" and snap.meta["refresh"] == "incremental"
    assert fleet.reads["full"] == 1
    # Read again within the overlap: a no-op.
    again = refresh(fleet, path)
    assert not again.written and again.changed_dag_ids == frozenset()


def test_a_rescheduled_config_gets_a_new_anchor_and_a_paused_one_none(fleet, path):
    refresh(fleet, path)
    first, second = [r for r in fleet.current_configs() if r["is_active"]][:2]
    fleet.edit(first["config_id"], schedule_cron="7 4 * * *")
    fleet.edit(second["config_id"], is_active=False)
    result = refresh(fleet, path)
    ids = {dag_id_for(c["customer_id"], c["config_id"]) for c in (first, second)}
    assert result.changed_dag_ids == ids
    after = _rows(path)
    assert after[dag_id_for(second["customer_id"], second["config_id"])][1] is None


def test_a_deleted_config_arrives_and_an_added_one_is_anchored_at_its_creation(fleet, path):
    refresh(fleet, path)
    gone = _runnable_config(fleet)
    fleet.edit(gone["config_id"], deleted_at=datetime.now(UTC))
    created = datetime.now(UTC)
    new = {**gone, "config_id": "brand_new", "version": 1, "created_at": created, "updated_at": created}
    fleet.log.append({**new, "deleted_at": None})
    result = refresh(fleet, path)
    gone_id, new_id = (dag_id_for(gone["customer_id"], c) for c in (gone["config_id"], "brand_new"))
    assert result.changed_dag_ids == {gone_id, new_id}
    after = _rows(path)
    assert gone_id not in after
    assert after[new_id][1] == created
    with Snapshot(path) as snap:
        assert snap.meta["configs"] == str(len(after))


def test_a_customer_change_reports_every_config_of_that_customer(fleet, path):
    refresh(fleet, path)
    target = _runnable_config(fleet)
    customer_id = target["customer_id"]
    fleet.set_customer(customer_id, status="SUSPENDED")
    result = refresh(fleet, path)
    own = {d for d in _rows(path) if d.startswith(customer_id + ".")}
    assert own and result.changed_dag_ids == own
    assert all(_rows(path)[d][1] is None for d in own)
    # A change of a field no anchor depends on still reports the customer's DAGs (their docs, pools).
    fleet.set_customer(customer_id, status="ACTIVE", company_name="Renamed Inc")
    assert refresh(fleet, path).changed_dag_ids == own


def test_many_customers_changed_at_once_report_exactly_their_configs(fleet, path):
    refresh(fleet, path)
    customers = sorted({row["customer_id"] for row in fleet.current_configs()})
    renamed = customers[::2]  # every other customer: the rest must not be reported
    for customer_id in renamed:
        fleet.set_customer(customer_id, company_name=f"Renamed {customer_id}")
    result = refresh(fleet, path)
    owners = {d: d.split(".", 1)[0] for d in _rows(path)}
    expected = {d for d, owner in owners.items() if owner in set(renamed)}
    assert len(renamed) > 1 and expected and expected != set(owners)
    assert result.changed_dag_ids == expected


def test_a_subscription_lapsing_with_time_alone_is_seen(fleet, path):
    refresh(fleet, path)
    target = _runnable_config(fleet)
    fleet.set_customer(
        target["customer_id"], plan=None, daily_run_limit=None, monthly_run_limit=None, max_concurrent_runs=None
    )
    result = refresh(fleet, path)
    assert dag_id_for(target["customer_id"], target["config_id"]) in result.changed_dag_ids
    assert _rows(path)[dag_id_for(target["customer_id"], target["config_id"])][1] is None


def test_a_customer_reactivated_after_hours_of_no_op_refreshes_is_anchored_at_the_last_confirmation(fleet, path):
    t0 = datetime.now(UTC)
    target = _runnable_config(fleet)
    customer_id = target["customer_id"]
    fleet.set_customer(customer_id, status="SUSPENDED")
    refresh(fleet, path, now=t0)
    last = t0
    for minutes in range(10, 50, 10):  # no-op rounds: nothing written
        last = t0 + timedelta(minutes=minutes)
        assert not refresh(fleet, path, now=last).written
    fleet.set_customer(customer_id, status="ACTIVE")
    result = refresh(fleet, path, now=last + timedelta(minutes=1))
    dag_id = dag_id_for(customer_id, target["config_id"])
    assert dag_id in result.changed_dag_ids
    assert _rows(path)[dag_id][1] == last, "anchored when last confirmed suspended, not when last written"


def test_the_periodic_full_refresh_picks_up_a_row_the_incremental_read_cannot_see(fleet, path):
    t0 = datetime.now(UTC)
    refresh(fleet, path, now=t0)
    target = _runnable_config(fleet)
    # Edited by hand with an old updated_at: before the watermark, so no incremental read sees it.
    fleet.edit(target["config_id"], display_name="by hand", updated_at=t0 - timedelta(days=2))
    assert not refresh(fleet, path, now=t0 + timedelta(minutes=30)).written
    result = refresh(fleet, path, now=t0 + HOUR)
    assert result.full and result.changed_dag_ids == {dag_id_for(target["customer_id"], target["config_id"])}
    assert _rows(path)[dag_id_for(target["customer_id"], target["config_id"])][0]["display_name"] == "by hand"
    # The next full one is an hour after that one, even when it found nothing (it writes no file).
    assert not refresh(fleet, path, now=t0 + 2 * HOUR).written
    assert fleet.reads["full"] == 3
    assert not refresh(fleet, path, now=t0 + 2 * HOUR + timedelta(minutes=59)).full


def test_incremental_rounds_end_where_a_full_refresh_would(fleet, path):
    """After edits, deletes, additions, a clash of ids differing in case and customer changes, a
    forced full refresh finds nothing to change: the incremental path built the same file."""
    refresh(fleet, path)
    configs = fleet.current_configs()
    fleet.edit(configs[0]["config_id"], display_name="x")
    fleet.edit(configs[1]["config_id"], deleted_at=datetime.now(UTC))
    later = datetime.now(UTC)
    clash = {**configs[2], "config_id": configs[2]["config_id"].upper(), "version": 1, "created_at": later}
    fleet.log.append({**clash, "updated_at": later, "deleted_at": None})
    fleet.set_customer(configs[3]["customer_id"], status="SUSPENDED")
    first = refresh(fleet, path)
    assert first.written and not first.full
    # The clash is rejected (a newer row never takes over a config): its DAG is not reported.
    clash_dag = dag_id_for(configs[2]["customer_id"], configs[2]["config_id"])
    assert clash_dag not in first.changed_dag_ids or configs[2]["customer_id"] == configs[3]["customer_id"]
    with Snapshot(path) as snap:
        assert (configs[2]["customer_id"], clash["config_id"]) in snap.duplicate_configs()
    forced = refresh(fleet, path, force=True)
    assert forced.full and not forced.written and forced.changed_dag_ids == frozenset()


def test_an_older_version_read_back_never_undoes_a_newer_one_the_api_patched_in(fleet, path):
    refresh(fleet, path)
    target = _runnable_config(fleet)
    fleet.edit(target["config_id"], display_name="v2")
    refresh(fleet, path)
    newer = {**target, "display_name": "v3", "version": target["version"] + 2, "updated_at": datetime.now(UTC)}
    patch_snapshot(path, configs=[newer], source="api")  # BigQuery's query does not show v3 yet
    refresh(fleet, path)
    assert _rows(path)[dag_id_for(target["customer_id"], target["config_id"])][0]["display_name"] == "v3"


def test_patch_and_refresh_each_bump_the_generation(fleet, path):
    refresh(fleet, path)
    target = _runnable_config(fleet)
    written = fleet.edit(target["config_id"], display_name="p")  # the API writes BigQuery, then patches
    patch_snapshot(path, configs=[{**written, "created_by": "api", "updated_by": "api"}], source="api")
    with Snapshot(path) as snap:
        assert snap.generation == 2
    # The API's row carries columns the snapshot's query does not: the refresh writes BigQuery's row
    # and reports its DAG once (a re-parse too many, never one too few).
    result = refresh(fleet, path)
    assert result.generation == 3 and result.changed_dag_ids == {dag_id_for(target["customer_id"], target["config_id"])}


def test_the_guard_applies_to_an_incremental_refresh(fleet, path):
    refresh(fleet, path)
    with Snapshot(path) as snap:
        running = set(snap.anchors())
    owners = sorted({d.split(".")[0] for d in running})
    for customer_id in owners[: len(owners) // 2]:
        fleet.set_customer(customer_id, status="SUSPENDED")
    inode = path.stat().st_ino
    with pytest.raises(RefreshRefused, match="snapshot refresh refused"):
        refresh(fleet, path, guard=RefreshGuard(share=0.25, min_dags=0))
    assert path.stat().st_ino == inode
    assert sorted(p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")) == []


def test_without_full_every_every_refresh_is_full(fleet, path):
    refresh_snapshot(fleet, path)
    assert refresh_snapshot(fleet, path).full
    assert fleet.reads["changes"] == 0
