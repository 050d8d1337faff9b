"""Issue 17 item 8 on a small fleet: an empty but valid result from BigQuery never empties the
fleet (refused and alerted until forced, however few DAGs run), and the syncer's alerts (a refused
refresh, rows BigQuery refused for their content) reach the notifier."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from customer_pipelines import syncer
from customer_pipelines.runs.failure_policy import Alert
from customer_pipelines.runs.mirror import RunStateMirror
from customer_pipelines.snapshot import RefreshGuard, RefreshRefused, Snapshot, refresh_snapshot


class SnapshotStore:
    """What refresh_snapshot reads of a BigQueryStore."""

    def __init__(self, customers: list[dict[str, Any]], configs: list[dict[str, Any]]) -> None:
        self.customers, self.configs = customers, configs
        self.settings = SimpleNamespace(bq_project="demo-project", bq_dataset="customers_metadata")

    def fetch_customers(self) -> list[dict[str, Any]]:
        return self.customers

    def fetch_configs(self) -> list[dict[str, Any]]:
        return self.configs

    def fetch_config_changes(self, since: Any) -> list[dict[str, Any]]:
        return [c for c in self.configs if c["updated_at"] > since]


@pytest.fixture
def alerts(monkeypatch: pytest.MonkeyPatch) -> list[Alert]:
    sent: list[Alert] = []
    monkeypatch.setattr("customer_pipelines.runs.failure_policy.notifier_from_settings", lambda settings: sent.append)
    return sent


@pytest.mark.parametrize("empty", ["configs", "customers", "both"])
def test_an_empty_result_never_empties_a_fleet_smaller_than_the_guards_minimum_until_forced(
    tmp_path: Path, demo_customers, demo_configs, empty
):
    path = tmp_path / "configs.sqlite"
    refresh_snapshot(SnapshotStore(demo_customers, demo_configs), path)
    with Snapshot(path) as snap:
        running, written_at = set(snap.anchors()), snap.meta["written_at"]
    assert len(running) == 4 < RefreshGuard().min_dags  # the default guard's share alone would let it through

    store = SnapshotStore(
        [] if empty in ("customers", "both") else demo_customers,
        [] if empty in ("configs", "both") else demo_configs,
    )
    refusal = r"would stop 4 of 4 running DAGs \(BigQuery returned no configs or no customers\)"
    with pytest.raises(RefreshRefused, match=refusal):
        refresh_snapshot(store, path, guard=RefreshGuard())
    with Snapshot(path) as snap:
        assert snap.meta["written_at"] == written_at and set(snap.anchors()) == running

    refresh_snapshot(store, path, guard=RefreshGuard(), force=True)
    with Snapshot(path) as snap:
        assert snap.anchors() == {}


def test_a_small_change_of_a_small_fleet_goes_through(tmp_path: Path, demo_customers, demo_configs):
    path = tmp_path / "configs.sqlite"
    refresh_snapshot(SnapshotStore(demo_customers, demo_configs), path)
    refresh_snapshot(SnapshotStore(demo_customers, demo_configs[:1]), path, guard=RefreshGuard())
    with Snapshot(path) as snap:
        assert len(snap.anchors()) == 1


def test_a_refused_refresh_is_alerted_and_the_round_serves_the_last_good_snapshot(
    tmp_path: Path, settings, demo_customers, demo_configs, alerts
):
    refresh_snapshot(SnapshotStore(demo_customers, demo_configs), settings.snapshot_file)
    # The round's refresh is incremental (no config changed: the configs it reads are none), and
    # reads the customers whole: none at all is refused.
    refreshed, refused = syncer._refresh(SnapshotStore([], demo_configs), settings)
    assert refreshed is None and refused and "snapshot refresh --force" in refused
    assert [a.level for a in alerts] == ["REFRESH_REFUSED"]
    with Snapshot(settings.snapshot_file) as snap:
        assert len(snap.anchors()) == 4


def test_rows_bigquery_refused_for_their_content_are_alerted_once(tmp_path: Path, settings, alerts):
    mirror = RunStateMirror(SimpleNamespace(), tmp_path / "spool")
    rejected = tmp_path / "spool" / "rejected"
    rejected.mkdir(parents=True)
    (rejected / "key-1.json").write_text('{"row": {}, "reasons": ["invalid: no such field"]}')
    syncer._alert_rejected(mirror, settings)
    syncer._alert_rejected(mirror, settings)  # the next round: nothing new
    (rejected / "key-2.json").write_text('{"row": {}, "reasons": ["invalid: no such field"]}')
    syncer._alert_rejected(mirror, settings)
    assert [a.level for a in alerts] == ["MIRROR_REJECTED", "MIRROR_REJECTED"]
    assert "1 transition(s)" in alerts[0].message and "key-1" in alerts[0].message and "key-2" in alerts[1].message
    assert "mirror replay-rejected" in alerts[0].message


def test_a_sync_round_runs_under_the_snapshot_lock(settings, monkeypatch: pytest.MonkeyPatch):
    """One writer at a time: a round holds refresh_lock from its refresh to its last step."""
    held: list[Path] = []

    class Lock:
        def __init__(self, path: Path, **_: Any) -> None:
            held.append(path)

        def __enter__(self) -> None:
            return None

        def __exit__(self, *exc: object) -> None:
            return None

    monkeypatch.setattr(syncer, "refresh_lock", Lock)
    monkeypatch.setattr(syncer, "_ensure_quota_schema", lambda s: (_ for _ in ()).throw(RuntimeError("stop here")))
    with pytest.raises(RuntimeError, match="stop here"):
        syncer.run_sync(settings, store=object())
    assert held == [settings.snapshot_file]


def test_a_failed_tick_check_is_logged_and_the_round_goes_on_with_no_findings(
    settings, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    from contextlib import nullcontext

    from customer_pipelines.fleet.sync import Fleet, PauseSyncResult, PoolSyncResult
    from customer_pipelines.runs.tick_watch import TickWatch

    def airflow_db_down(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("metadata database down")

    monkeypatch.setattr("customer_pipelines.airflow_db.metadata_session", lambda settings: nullcontext())
    watch = TickWatch(settings, notifier=lambda alert: None)
    monkeypatch.setattr(watch, "check", airflow_db_down)
    found = syncer._check_ticks(watch, Fleet({}, []), {}, settings)

    assert not found.missed and not found.late
    assert "tick check failed" in caplog.text
    report = syncer.SyncReport(0, 0, [], PoolSyncResult(), PauseSyncResult(), 0.0, ticks_missed=2, ticks_late=1)
    assert "ticks: 2 missed unexplained, 1 late" in report.summary()


def test_a_parse_request_that_could_not_be_sent_is_sent_with_the_next_rounds_own(settings, monkeypatch):
    """Airflow's database refusing the request is simulated (request_files raises, as it does when
    the database is down: a fault a unit test cannot cause otherwise); the syncer's handling is real."""
    from customer_pipelines.fleet.shards import files_to_reparse

    sent: list[list[str]] = []
    database_down = True

    def request_files(_settings: Any, files: list[str]) -> None:
        if database_down:
            raise ConnectionError("could not connect to Airflow's metadata database")
        sent.append(list(files))

    monkeypatch.setattr("customer_pipelines.fleet.parsing.request_files", request_files)
    first, second = "cust_a.daily_sales", "cust_b.weekly_costs"
    assert syncer.request_parses(SimpleNamespace(changed_dag_ids=frozenset({first})), settings) == 0
    assert sent == []
    database_down = False
    asked = syncer.request_parses(SimpleNamespace(changed_dag_ids=frozenset({second})), settings)
    assert sent == [sorted(set(files_to_reparse([first, second], settings.fleet_shards)))]
    assert asked == len(sent[0])
    # Delivered: the next round without changes asks for nothing, and one with a change for its own.
    assert syncer.request_parses(SimpleNamespace(changed_dag_ids=frozenset()), settings) == 0
    syncer.request_parses(SimpleNamespace(changed_dag_ids=frozenset({first})), settings)
    assert sent[1:] == [sorted(files_to_reparse([first], settings.fleet_shards))]


def test_with_a_store_a_round_publishes_the_generation_before_asking_for_parses_and_waits_when_it_cannot(
    tmp_path, monkeypatch, demo_customers, demo_configs
):
    """The store refusing a write is simulated by a store URL whose directory cannot be created (a
    regular file in its place); a real ``file://`` store otherwise. Parse requests are recorded
    (Airflow's database is not part of a unit test)."""
    from customer_pipelines.fleet.shards import files_to_reparse
    from customer_pipelines.settings import Settings
    from customer_pipelines.snapshot import write_snapshot
    from customer_pipelines.snapshot_store import SnapshotStore

    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    settings = Settings(state_dir=tmp_path / "state", snapshot_store_url=f"file://{blocked}/store")
    write_snapshot(settings.snapshot_file, demo_customers, demo_configs, source="test")
    seen_by_request: list[int | None] = []

    def request_files(_settings: Any, files: list[str]) -> None:
        seen_by_request.append(SnapshotStore(str(_settings.snapshot_store_url)).current())

    monkeypatch.setattr("customer_pipelines.fleet.parsing.request_files", request_files)
    changed = SimpleNamespace(changed_dag_ids=frozenset({"cust_a.daily_sales"}))
    assert syncer.request_parses(changed, settings) == 0, "no parse of a generation the store does not have"
    assert seen_by_request == []

    store_dir = tmp_path / "store"
    settings = settings.model_copy(update={"snapshot_store_url": f"file://{store_dir}"})
    asked = syncer.request_parses(SimpleNamespace(changed_dag_ids=frozenset()), settings)
    assert asked == len(files_to_reparse(["cust_a.daily_sales"], settings.fleet_shards)), "the kept requests go now"
    with Snapshot(settings.snapshot_file) as snapshot:
        assert seen_by_request == [snapshot.generation], "published before the parses were asked for"
