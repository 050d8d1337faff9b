"""Sharded DAG files (fleet/shards.py): a config's shard is stable, each shard file builds its own
slice, a worker's parse builds one DAG from one row, and a change asks for its shard's parse only."""

from __future__ import annotations

import runpy
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG

from customer_pipelines import seed, snapshot
from customer_pipelines.fleet.parsing import BUNDLE_REFRESH_SECONDS, PERIODIC_REPARSE_SECONDS
from customer_pipelines.fleet.shards import (
    ERRORS_FILE,
    MAX_SHARDS,
    files_to_reparse,
    shard_file,
    shard_index,
    shard_of,
)
from customer_pipelines.settings import Settings, get_settings
from customer_pipelines.snapshot import Snapshot
from tests_support import FLEET_DIR, run_fleet_files


def _identity(row: dict[str, Any]) -> str:
    return f"{row['customer_id']}.{row['config_id']}"


def _shard_of_each(path: Path, shards: int) -> dict[str, int]:
    """dag_id -> the shard whose file reads it (the query a shard file runs)."""
    with Snapshot(path) as snap:
        return {r.dag_id: i for i in range(shards) for r in snap.configs(shard=i, shards=shards) if r.dag_id}


@pytest.mark.parametrize("shards", [16, 37])
def test_adding_and_removing_1000_configs_moves_no_other_config_between_shards(tmp_path, customer_rows_of, shards):
    data = seed.fleet_dataset(700, seed=21)
    customers = customer_rows_of(data)
    configs = [dict(row) for row in data.configs]
    assert len(configs) > 2_500
    before = _shard_of_each(snapshot.write_snapshot(tmp_path / "a.sqlite", customers, configs, source="t"), shards)

    removed, kept = configs[:1_000], configs[1_000:]
    added = [{**row, "config_id": f"{row['config_id']}_new"} for row in configs[1_000:2_000]]
    after = _shard_of_each(snapshot.write_snapshot(tmp_path / "b.sqlite", customers, kept + added, source="t"), shards)

    assert set(after) == {_identity(r) for r in kept + added}, "every config is in exactly one shard"
    assert not {_identity(r) for r in removed} & set(after)
    moved = {d for d in (_identity(r) for r in kept) if after[d] != before[d]}
    assert not moved, f"{len(moved)} configs changed shard, e.g. {sorted(moved)[:3]}"
    # Each config's shard is the one its own id gives, whatever else is in the fleet.
    assert all(after[d] == shard_of(d, shards) for d in after)
    assert len(set(after.values())) == shards, "every shard holds configs"


@pytest.fixture
def fleet_env(monkeypatch, tmp_path, fleet_snapshot_rows):
    customers, configs = fleet_snapshot_rows
    path = snapshot.write_snapshot(tmp_path / "snap" / "configs.sqlite", customers, configs, source="t")
    monkeypatch.setenv("CP_SNAPSHOT_PATH", str(path))
    monkeypatch.setenv("CP_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", raising=False)
    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", raising=False)

    def use(shards: int) -> Path:
        monkeypatch.setenv("CP_FLEET_SHARDS", str(shards))
        get_settings.cache_clear()
        return path

    return use


def _dags_of(file: Path) -> set[str]:
    return {
        name for name, value in runpy.run_path(str(file), run_name="unit_test_shard").items() if isinstance(value, DAG)
    }


@pytest.mark.parametrize("shards", [1, 5])
def test_each_shard_file_builds_its_own_slice_and_files_above_the_count_build_nothing(fleet_env, shards):
    path = fleet_env(shards)
    with Snapshot(path) as snap:
        expected = {i: {r.dag_id for r in snap.configs(shard=i, shards=shards)} for i in range(shards)}
        valid = set(snap.anchors()) | {r.dag_id for r in snap.configs()}
    for i in range(MAX_SHARDS):
        built = _dags_of(FLEET_DIR / f"shard_{i:02d}.py")
        if i < shards:
            assert built and built <= expected[i], f"shard {i} built a config of another shard"
        else:
            assert not built, f"shard file {i} is above CP_FLEET_SHARDS={shards} and must define nothing"
    together = run_fleet_files()
    assert set(together) <= valid and len(together) >= len(valid) - 10  # the fixture's invalid rows aside


class _CountingSnapshotReads:
    """Counts the config and customer rows the factory materialises, and every statement SQLite runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.config_rows: list[str | None] = []
        self.customer_rows: list[str] = []
        self.statements: list[str] = []
        original_of = snapshot.ConfigRow.of.__func__  # type: ignore[attr-defined]
        original_customer = snapshot._customer_or_none
        original_connect = sqlite3.connect

        def of(cls: type, config_id: str, dag_id: str | None, *rest: Any) -> Any:
            self.config_rows.append(dag_id)
            return original_of(cls, config_id, dag_id, *rest)

        def customer(customer_id: str, payload: str) -> Any:
            self.customer_rows.append(customer_id)
            return original_customer(customer_id, payload)

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = original_connect(*args, **kwargs)
            conn.set_trace_callback(self.statements.append)
            return conn

        monkeypatch.setattr(snapshot.ConfigRow, "of", classmethod(of))
        monkeypatch.setattr(snapshot, "_customer_or_none", customer)
        monkeypatch.setattr(snapshot.sqlite3, "connect", connect)


def test_a_worker_parse_builds_exactly_one_dag_and_reads_no_other_configs_rows(fleet_env, monkeypatch):
    path = fleet_env(4)
    with Snapshot(path) as snap:
        target = sorted(snap.anchors())[len(snap.anchors()) // 2]
        total = len(list(snap.configs()))
    assert total > 150
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", target)
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", "run_pipeline")
    reads = _CountingSnapshotReads(monkeypatch)

    built = _dags_of(FLEET_DIR / Path(shard_file(shard_of(target, 4))).name)

    assert built == {target}
    assert reads.config_rows == [target], "one config row read: the task's own"
    assert reads.customer_rows == [target.split(".")[0]], "one customer row read: the config's owner"
    scans = [s for s in reads.statements if " FROM configs" in s and "WHERE dag_id" not in s]
    assert not scans, f"a statement read other configs' rows: {scans}"
    assert not [s for s in reads.statements if "FROM customers" in s and "WHERE customer_id" not in s]


def test_a_folder_parse_under_one_dags_context_defines_it_in_its_own_shard_file_only(fleet_env, monkeypatch):
    """`airflow dags test` parses every file of the bundle with the DAG's parsing context: a DAG
    defined by every shard would be a duplicate (an import error that marks the other files' DAGs stale)."""
    path = fleet_env(4)
    with Snapshot(path) as snap:
        target = sorted(snap.anchors())[0]
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", target)

    built = {i: _dags_of(FLEET_DIR / f"shard_{i:02d}.py") for i in range(4)}

    assert built[shard_of(target, 4)] == {target}
    assert {i: dags for i, dags in built.items() if dags} == {shard_of(target, 4): {target}}


def test_the_twin_a_shard_parse_reads_every_config_of_its_shard(fleet_env, monkeypatch):
    """The counting above can see reads: the DAG processor's parse of the same file reads its slice."""
    path = fleet_env(4)
    reads = _CountingSnapshotReads(monkeypatch)
    built = _dags_of(FLEET_DIR / "shard_01.py")
    with Snapshot(path) as snap:
        slice_ = {r.dag_id for r in snap.configs(shard=1, shards=4)}
    assert set(reads.config_rows) == slice_ and built <= slice_ and len(built) > 20


def test_a_change_asks_for_its_shard_and_the_errors_file_only():
    dag_ids = ["cust_a.daily_cost", "cust_b.weekly_security"]
    files = files_to_reparse(dag_ids, 16)
    assert files == [*sorted({shard_file(shard_of(d, 16)) for d in dag_ids}), ERRORS_FILE]
    assert files_to_reparse([], 16) == [], "nothing changed: no parse at all"
    assert files_to_reparse(None, 3) == [shard_file(0), shard_file(1), shard_file(2), ERRORS_FILE]


def test_shard_file_names_round_trip_and_a_stranger_is_refused():
    assert [shard_index(shard_file(i)) for i in range(MAX_SHARDS)] == list(range(MAX_SHARDS))
    with pytest.raises(ValueError, match="not a shard file name"):
        shard_index("customer_pipelines_fleet.py")


def test_the_shard_count_is_bounded_by_the_shipped_files():
    assert Settings(fleet_shards=MAX_SHARDS).fleet_shards == MAX_SHARDS
    with pytest.raises(ValueError, match="fleet_shards"):
        Settings(fleet_shards=MAX_SHARDS + 1)


def test_the_shipped_periodic_reparse_interval_is_at_least_ten_minutes_and_a_requested_parse_always_publishes(
    tmp_path,
):
    import yaml

    from customer_pipelines.local.airflow import airflow_env

    env = airflow_env(Settings(state_dir=tmp_path), "postgresql://u@127.0.0.1/db")
    assert int(env["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"]) >= 600
    compose = yaml.safe_load((Path(__file__).resolve().parents[3] / "docker-compose.yaml").read_text())
    common = compose["x-airflow-common"]["environment"]
    assert int(common["AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL"]) >= 600
    assert PERIODIC_REPARSE_SECONDS >= 600
    # Airflow's 30 s default would drop the write of a change parsed soon after the DAG's last one.
    assert env["AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL"] == "0"
    assert str(common["AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL"]) == "0"


def test_the_shipped_stacks_list_the_dags_folder_every_ten_minutes_at_most_not_every_twenty_seconds(tmp_path):
    import yaml

    from customer_pipelines.local.airflow import airflow_env

    # Each listing loads every DAG of the bundle from the metadata database (seconds at 50,000 DAGs).
    env = airflow_env(Settings(state_dir=tmp_path), "postgresql://u@127.0.0.1/db")
    compose = yaml.safe_load((Path(__file__).resolve().parents[3] / "docker-compose.yaml").read_text())
    common = compose["x-airflow-common"]["environment"]
    assert int(env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"]) == BUNDLE_REFRESH_SECONDS >= 600
    assert int(common["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"]) == BUNDLE_REFRESH_SECONDS
