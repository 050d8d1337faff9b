"""api/service.SnapshotReader: each thread opens the current generation, but its whole-file check
runs once per generation, not once per thread; a new generation is checked again, and a damaged one
is still served from the previous generation."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from customer_pipelines.api import service
from customer_pipelines.api.service import SnapshotPatcher, SnapshotReader
from customer_pipelines.snapshot import Snapshot


class CountedChecks(Snapshot):
    checks = 0

    def __init__(self, path: Path, *, checked: bool = False) -> None:
        if not checked:
            CountedChecks.checks += 1
        super().__init__(path, checked=checked)


@pytest.fixture
def counted(monkeypatch) -> type[CountedChecks]:
    CountedChecks.checks = 0
    monkeypatch.setattr(service, "Snapshot", CountedChecks)
    return CountedChecks


def read_in_threads(reader: SnapshotReader, threads: int = 4) -> set[str]:
    """The source of the snapshot each of ``threads`` new threads reads (each opens its own)."""
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return set(pool.map(lambda _: reader.get().meta["written_at"], range(threads)))


def test_a_generation_is_checked_once_however_many_threads_open_it(counted, demo_snapshot_path, demo_configs):
    reader = SnapshotReader(demo_snapshot_path)
    first = read_in_threads(reader)
    assert len(first) == 1 and counted.checks == 1
    SnapshotPatcher(demo_snapshot_path).patch(configs=[{**demo_configs[0], "display_name": "renamed"}])
    second = read_in_threads(reader)
    assert len(second) == 1 and second != first, "every thread reads the new generation"
    assert counted.checks == 2


def test_a_damaged_new_generation_is_still_checked_and_the_previous_one_served(
    counted, write_snap, demo_customers, demo_configs
):
    path = write_snap(demo_customers, demo_configs, source="gen1")
    reader = SnapshotReader(path)
    assert read_in_threads(reader, 2) and counted.checks == 1
    write_snap(demo_customers, demo_configs[:1], path=path, source="gen2")
    size = path.stat().st_size
    with open(path, "r+b") as fh:  # garbage over gen2, in place
        fh.write((b"\x00not a database\xff" * (size // 16 + 1))[:size])
    with ThreadPoolExecutor(max_workers=2) as pool:
        sources = set(pool.map(lambda _: reader.get().meta["source"], range(2)))
    assert sources == {"gen1"}
    assert counted.checks > 1
