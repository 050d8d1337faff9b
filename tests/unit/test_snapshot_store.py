"""The snapshot's generations in object storage (a ``file://`` store here: the same fsspec calls as
``gs://``): published in order, fetched and verified, kept as long as runs may need them, cached
once per generation on a worker, adopted by a writer whose copy is older."""

from __future__ import annotations

import gzip
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from customer_pipelines import snapshot_store
from customer_pipelines.settings import ParseSettings
from customer_pipelines.snapshot import Snapshot, write_snapshot
from customer_pipelines.snapshot_store import (
    KEEP_NEWEST,
    GenerationMissing,
    SnapshotStore,
    StoreError,
    cached_generation,
    fetch_newest,
    publish_newest,
)


def _settings(state: Path, store: Path, **more: Any) -> ParseSettings:
    return ParseSettings(state_dir=state, snapshot_store_url=f"file://{store}", **more)


def _write(path: Path, customers: list, configs: list) -> int:
    write_snapshot(path, customers, configs, source="test")
    with Snapshot(path) as snapshot:
        return snapshot.generation


def _dag_ids(path: Path) -> set[str]:
    with Snapshot(path) as snapshot:
        return {row.dag_id for row in snapshot.configs() if row.dag_id}


@pytest.fixture
def writer(tmp_path: Path) -> ParseSettings:
    return _settings(tmp_path / "syncer", tmp_path / "store")


def test_a_published_generation_is_fetched_byte_for_byte_into_another_state_directory(
    tmp_path, writer, demo_customers, demo_configs
):
    generation = _write(writer.snapshot_file, demo_customers, demo_configs)
    assert publish_newest(writer) == generation
    store = SnapshotStore(str(writer.snapshot_store_url))
    assert store.current() == generation
    assert store.generations() == [generation]

    worker = _settings(tmp_path / "worker", tmp_path / "store")
    assert fetch_newest(worker) == generation
    assert worker.snapshot_file.read_bytes() == writer.snapshot_file.read_bytes()
    assert worker.snapshot_file.stat().st_mode & 0o077 == 0, "every tenant's configs: owner-only"
    assert publish_newest(writer) is None, "a generation the store has is not published twice"


def test_the_store_only_moves_forward_and_a_writer_behind_it_adopts_the_stores_generation(
    tmp_path, writer, demo_customers, demo_configs
):
    for _ in range(3):
        newest = _write(writer.snapshot_file, demo_customers, demo_configs)
    publish_newest(writer)
    # A syncer on a new host (empty state directory) writes generation 1: the store keeps 3.
    fresh = _settings(tmp_path / "new-syncer", tmp_path / "store")
    _write(fresh.snapshot_file, demo_customers, demo_configs[:1])
    assert publish_newest(fresh) is None
    assert SnapshotStore(str(fresh.snapshot_store_url)).current() == newest
    # Its round adopts the store's before refreshing, so its next generation goes on from there.
    assert fetch_newest(fresh) == newest
    assert _write(fresh.snapshot_file, demo_customers, demo_configs) == newest + 1
    assert publish_newest(fresh) == newest + 1


def test_a_damaged_or_missing_generation_is_refused_with_the_reason(tmp_path, writer, demo_customers, demo_configs):
    generation = _write(writer.snapshot_file, demo_customers, demo_configs)
    publish_newest(writer)
    store = SnapshotStore(str(writer.snapshot_store_url))
    blob = tmp_path / "store" / "generations" / f"{generation:012d}.sqlite.gz"
    raw = gzip.decompress(blob.read_bytes())
    blob.write_bytes(gzip.compress(raw[:-100] + b"\0" * 100))
    with pytest.raises(StoreError, match="does not match its manifest"):
        store.fetch(generation, tmp_path / "out.sqlite")
    assert not (tmp_path / "out.sqlite").exists(), "nothing half-written"
    with pytest.raises(GenerationMissing, match=f"generation {generation + 5} is not in"):
        store.fetch(generation + 5, tmp_path / "out.sqlite")


def test_old_generations_are_deleted_after_the_keep_time_but_never_the_newest_ones(
    tmp_path, writer, demo_customers, demo_configs
):
    store = SnapshotStore(str(writer.snapshot_store_url))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    total = KEEP_NEWEST + 5
    for n in range(total):
        generation = _write(writer.snapshot_file, demo_customers, demo_configs)
        store.publish(writer.snapshot_file, generation, now=start + timedelta(hours=n))
    # Kept 4 hours: generations published at hours 0..10 are older than that at hour 14.
    deleted = store.prune(timedelta(hours=4), now=start + timedelta(hours=total - 1))
    assert deleted == list(range(1, total - KEEP_NEWEST + 1))
    assert store.generations() == list(range(total - KEEP_NEWEST + 1, total + 1))
    # A long keep time deletes none of them, however many there are.
    assert store.prune(timedelta(days=7), now=start + timedelta(hours=total)) == []


def test_a_worker_fetches_a_generation_once_and_runs_on_the_newest_when_it_was_deleted(
    tmp_path, writer, demo_customers, demo_configs, caplog
):
    first = _write(writer.snapshot_file, demo_customers, demo_configs)
    publish_newest(writer)
    second = _write(writer.snapshot_file, demo_customers, demo_configs[:2])
    publish_newest(writer)
    worker = _settings(tmp_path / "worker", tmp_path / "store")

    cached = cached_generation(worker, first)
    assert cached.parent == worker.state_dir / snapshot_store.CACHE_DIR
    assert _dag_ids(cached) == {
        row["customer_id"] + "." + row["config_id"] for row in demo_configs if row["customer_id"] and row["config_id"]
    }
    # Cached: the store's copy gone, the worker still has it.
    (tmp_path / "store" / "generations" / f"{first:012d}.sqlite.gz").unlink()
    (tmp_path / "store" / "generations" / f"{first:012d}.json").unlink()
    assert cached_generation(worker, first) == cached

    other_worker = _settings(tmp_path / "worker-2", tmp_path / "store")
    with caplog.at_level(logging.WARNING, logger="customer_pipelines.snapshot_store"):
        fallback = cached_generation(other_worker, first)
    assert fallback.name == f"configs-{second:012d}.sqlite"
    assert f"generation {first} is no longer in" in caplog.text


def test_a_workers_cache_keeps_the_newest_generations_only(tmp_path, writer, demo_customers, demo_configs):
    worker = _settings(tmp_path / "worker", tmp_path / "store")
    generations = []
    for _ in range(snapshot_store.CACHE_KEEP + 3):
        generations.append(_write(writer.snapshot_file, demo_customers, demo_configs))
        publish_newest(writer)
        Snapshot(cached_generation(worker, generations[-1])).close()  # opened: its integrity sidecar written
    cache = worker.state_dir / snapshot_store.CACHE_DIR
    kept = sorted(p.name for p in cache.glob("configs-*.sqlite"))
    assert kept == [f"configs-{g:012d}.sqlite" for g in generations[-snapshot_store.CACHE_KEEP :]]
    assert not [p for p in cache.iterdir() if p.name.startswith(f".configs-{generations[0]:012d}")], "sidecars go too"


def test_without_a_store_nothing_is_published_and_the_local_file_is_the_snapshot(
    tmp_path, demo_customers, demo_configs
):
    settings = ParseSettings(state_dir=tmp_path / "state")
    generation = _write(settings.snapshot_file, demo_customers, demo_configs)
    assert publish_newest(settings) is None
    assert fetch_newest(settings) == generation
    with pytest.raises(StoreError, match="CP_SNAPSHOT_STORE_URL is not set"):
        cached_generation(settings, generation)


def test_a_store_url_without_a_scheme_is_refused_naming_the_setting(monkeypatch):
    from customer_pipelines.settings import settings_problems

    monkeypatch.setenv("CP_SNAPSHOT_STORE_URL", "/mnt/snapshots")
    [problem] = settings_problems(ParseSettings)
    assert problem.startswith("setting CP_SNAPSHOT_STORE_URL:"), problem
