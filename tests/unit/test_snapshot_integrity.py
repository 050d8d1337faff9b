"""snapshot.py: the whole-file integrity check runs once per generation (when it is written, or on
the first open of a file without a record), not on every open; a file changed or damaged in place is
checked again and, if damaged, the previous generation is served."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from pathlib import Path

import pytest

from customer_pipelines import snapshot
from customer_pipelines.snapshot import Snapshot, SnapshotError


@pytest.fixture
def checks(monkeypatch) -> list[str]:
    """The whole-file checks run (each the file's name), counted at snapshot.quick_check."""
    ran: list[str] = []
    real = snapshot.quick_check

    def counted(conn: sqlite3.Connection) -> None:
        ran.append(Path(conn.execute("PRAGMA database_list").fetchone()[2]).name)
        real(conn)

    monkeypatch.setattr(snapshot, "quick_check", counted)
    return ran


def _record(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


def _damage_in_place(path: Path, *, keep_mtime: bool = False) -> None:
    """Garbage over the whole file, in place (same inode and size), as tests/unit/test_snapshot's
    _corrupt; ``keep_mtime``: its mtime put back too, as a write within one clock tick leaves it."""
    st = path.stat()
    with open(path, "r+b") as fh:
        fh.write((b"\x00not a database\xff" * (st.st_size // 16 + 1))[: st.st_size])
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size


def test_a_generation_is_checked_once_when_written_and_never_when_opened(
    checks, write_snap, demo_customers, demo_configs
):
    path = write_snap(demo_customers, demo_configs)
    assert checks == [f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp"]  # the temp file
    for _ in range(5):
        with Snapshot(path) as snap:
            assert len(list(snap.configs())) == len(demo_configs)
        with Snapshot.open_last_good(path) as snap:
            assert snap.path == path
    assert len(checks) == 1


def test_a_generation_without_a_record_is_checked_by_its_first_open_only(
    checks, write_snap, demo_customers, demo_configs
):
    path = write_snap(demo_customers, demo_configs)
    _record(path).unlink()  # as a file written by an older version, which kept no record
    checks.clear()
    for _ in range(3):
        Snapshot(path).close()
    assert checks == [path.name]
    assert _record(path).exists()


def test_the_previous_generation_stays_verified_after_a_new_one_is_swapped_in(
    checks, write_snap, demo_customers, demo_configs
):
    path = write_snap(demo_customers, demo_configs, source="gen1")
    write_snap(demo_customers, demo_configs[:2], path=path, source="gen2")
    checks.clear()
    with Snapshot(path.with_name(path.name + ".prev")) as prev:
        assert prev.meta["source"] == "gen1"
    assert checks == []


def test_a_file_damaged_in_place_is_checked_again_and_the_previous_generation_served(
    checks, write_snap, demo_customers, demo_configs
):
    path = write_snap(demo_customers, demo_configs, source="gen1")
    write_snap(demo_customers, demo_configs[:2], path=path, source="gen2")
    Snapshot(path).close()
    _damage_in_place(path)
    checks.clear()
    with Snapshot.open_last_good(path) as snap:
        assert snap.meta["source"] == "gen1"
    # The damaged file fails already on its meta (garbage is no database); .prev is recorded.
    assert checks == []
    with pytest.raises(sqlite3.DatabaseError):
        Snapshot(path)


def test_damage_that_keeps_size_and_mtime_is_still_detected(write_snap, demo_customers, demo_configs):
    path = write_snap(demo_customers, demo_configs, source="gen1")
    write_snap(demo_customers, demo_configs[:2], path=path, source="gen2")
    _damage_in_place(path, keep_mtime=True)
    with Snapshot.open_last_good(path) as snap:
        assert snap.meta["source"] == "gen1"


def test_damaged_config_pages_under_an_intact_header_and_mtime_are_checked_and_fall_back(
    checks, write_snap, demo_customers, demo_configs
):
    path = write_snap(demo_customers, demo_configs, source="gen1")
    write_snap(demo_customers, demo_configs[:2], path=path, source="gen2")
    st = path.stat()
    data = path.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    keep = 2 * page_size  # header and meta pages intact: the meta reads, the configs do not
    with open(path, "r+b") as fh:
        fh.seek(keep)
        fh.write(b"\xde\xad" * ((len(data) - keep) // 2))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    checks.clear()
    with Snapshot.open_last_good(path) as snap:
        assert snap.meta["source"] == "gen1"
    assert checks == [path.name]  # the current file checked again (and failed); .prev not


def test_a_valid_file_changed_in_place_is_checked_again_once(checks, write_snap, demo_customers, demo_configs):
    path = write_snap(demo_customers, demo_configs)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = 'edited' WHERE key = 'source'")
    conn.close()
    checks.clear()
    for _ in range(3):
        with Snapshot(path) as snap:
            assert snap.meta["source"] == "edited"
    assert checks == [path.name]


def test_checked_skips_both_the_record_and_the_check(checks, write_snap, demo_customers, demo_configs):
    path = write_snap(demo_customers, demo_configs)
    _record(path).unlink()
    checks.clear()
    Snapshot(path, checked=True).close()
    assert checks == [] and not _record(path).exists()


def test_the_integrity_record_is_owner_only_and_names_the_file(write_snap, demo_customers, demo_configs):
    path = write_snap(demo_customers, demo_configs)
    assert stat.S_IMODE(_record(path).stat().st_mode) == 0o600
    identity = snapshot.FileIdentity.of(path)
    assert identity is not None and identity.ino == path.stat().st_ino
    assert snapshot.is_verified(path, identity)


def test_a_corrupt_file_without_prev_still_raises(write_snap, demo_customers, demo_configs):
    path = write_snap(demo_customers, demo_configs)
    _damage_in_place(path, keep_mtime=True)
    with pytest.raises(SnapshotError, match="no readable config snapshot"):
        Snapshot.open_last_good(path)
