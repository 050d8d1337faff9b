"""snapshot.py: the local SQLite snapshot the DAG files read instead of BigQuery."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from customer_pipelines import snapshot
from customer_pipelines.fleet import factory
from customer_pipelines.models import PipelineConfig, parse_config
from customer_pipelines.snapshot import Snapshot, SnapshotError


def _prev(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def _corrupt(path: Path) -> None:
    """Garbage over the whole file, in place (same inode)."""
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.write((b"\x00not a database\xff" * (size // 16 + 1))[:size])


@pytest.fixture
def two_generations(write_snap, demo_customers, demo_configs) -> Path:
    """gen1 holds the four demo configs, gen2 (current) only the first two."""
    path = write_snap(demo_customers, demo_configs, source="gen1")
    write_snap(demo_customers, demo_configs[:2], path=path, source="gen2")
    return path


def test_write_records_meta_and_every_row(demo_snapshot_path, demo_configs, demo_customers):
    with Snapshot(demo_snapshot_path) as snap:
        assert snap.meta["schema_version"] == str(snapshot.SCHEMA_VERSION)
        assert snap.meta["source"] == "test"
        assert snap.meta["configs"] == str(len(demo_configs))
        assert snap.meta["customers"] == str(len(demo_customers))
        assert sorted(r.config_id for r in snap.configs()) == sorted(c["config_id"] for c in demo_configs)
        assert set(snap.customers()) == {"cust_acme_001", "cust_globex_001"}
        assert snap.customer("cust_acme_001").company_name == "Acme Test Corp"
        assert snap.customer("cust_nobody") is None


def test_rows_round_trip_as_json_and_still_parse(demo_snapshot_path):
    with Snapshot(demo_snapshot_path) as snap:
        rows = list(snap.configs())
    assert all(isinstance(r.row["updated_at"], str) for r in rows)  # datetimes stored as ISO text
    assert all(isinstance(parse_config(r.row), PipelineConfig) for r in rows)
    assert all(r.bucket == snapshot.bucket_of(r.dag_id) for r in rows)


def test_write_swaps_in_a_new_inode_and_an_open_reader_keeps_reading_the_old_generation(
    write_snap, demo_customers, demo_configs
):
    path = write_snap(demo_customers, demo_configs, source="gen1")
    first_inode = path.stat().st_ino
    with Snapshot(path) as reader:
        write_snap(demo_customers, demo_configs[:1], path=path, source="gen2")

        assert path.stat().st_ino != first_inode
        # The reader opened before the swap still sees gen1, whole.
        assert reader.meta["source"] == "gen1"
        assert len(list(reader.configs())) == len(demo_configs)
        assert reader.config_by_dag_id("cust_globex_001.globex_aws_cost_daily") is not None

    with Snapshot(path) as fresh:
        assert fresh.meta["source"] == "gen2"
        assert len(list(fresh.configs())) == 1
    # No temporary file is left; beside the two generations only the integrity record.
    assert sorted(p.name for p in path.parent.iterdir()) == [
        ".configs.sqlite.verified",
        "configs.sqlite",
        "configs.sqlite.prev",
    ]


def test_previous_generation_is_kept_as_prev(write_snap, demo_customers, demo_configs):
    path = write_snap(demo_customers, demo_configs, source="gen1")
    assert not _prev(path).exists()
    for generation in ("gen2", "gen3"):
        before = path.stat().st_ino
        write_snap(demo_customers, demo_configs, path=path, source=generation)
        assert _prev(path).stat().st_ino == before
    with Snapshot(_prev(path)) as prev, Snapshot(path) as current:
        assert prev.meta["source"] == "gen2"
        assert current.meta["source"] == "gen3"


def test_corrupt_current_file_is_served_from_prev(two_generations):
    _corrupt(two_generations)
    with pytest.raises(sqlite3.DatabaseError):
        Snapshot(two_generations)
    with Snapshot.open_last_good(two_generations) as snap:
        assert snap.path == _prev(two_generations)
        assert snap.meta["source"] == "gen1"


def test_load_fleet_builds_every_dag_of_prev_when_the_current_file_is_corrupt(two_generations, settings, demo_dag_ids):
    _corrupt(two_generations)
    result = factory.load_fleet(snapshot_path=two_generations, settings=settings)
    assert result.snapshot_error is None
    assert set(result.dags) == demo_dag_ids  # gen1's four, not gen2's two


def test_raise_config_errors_says_the_previous_snapshot_is_served(two_generations, settings):
    _corrupt(two_generations)
    with pytest.raises(factory.InvalidPipelineConfigs, match=r"unreadable; serving the previous one .*\.prev"):
        factory.raise_config_errors(snapshot_path=two_generations, settings=settings)


def test_missing_current_file_is_served_from_prev(two_generations):
    two_generations.unlink()
    with Snapshot.open_last_good(two_generations) as snap:
        assert snap.meta["source"] == "gen1"


def test_snapshot_of_another_schema_version_is_skipped_for_prev(two_generations):
    with sqlite3.connect(two_generations) as conn:
        conn.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    conn.close()
    with Snapshot.open_last_good(two_generations) as snap:
        assert snap.meta["source"] == "gen1"


def test_missing_current_and_prev_raise_snapshot_error(tmp_path):
    with pytest.raises(SnapshotError, match="missing"):
        Snapshot.open_last_good(tmp_path / "configs.sqlite")


def test_corrupt_current_without_prev_raises_snapshot_error(demo_snapshot_path):
    _corrupt(demo_snapshot_path)
    with pytest.raises(SnapshotError, match="no readable config snapshot"):
        Snapshot.open_last_good(demo_snapshot_path)


def test_load_fleet_without_any_snapshot_returns_an_empty_result_with_the_error(tmp_path, settings):
    result = factory.load_fleet(snapshot_path=tmp_path / "nowhere" / "configs.sqlite", settings=settings)
    assert result.dags == {}
    assert result.errors == []
    assert result.snapshot_error is not None
    assert "no readable config snapshot" in result.snapshot_error


def test_load_fleet_defaults_to_the_settings_snapshot_file(settings, write_snap, demo_customers, demo_configs):
    write_snap(demo_customers, demo_configs, path=settings.snapshot_file)
    assert len(factory.load_fleet(settings=settings).dags) == len(demo_configs)


def test_current_file_with_damaged_config_pages_is_served_from_prev(two_generations, settings, demo_dag_ids):
    data = two_generations.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")
    keep = 2 * page_size  # the header page and the meta table's page stay intact
    two_generations.write_bytes(data[:keep] + b"\xde\xad" * ((len(data) - keep) // 2))

    result = factory.load_fleet(snapshot_path=two_generations, settings=settings)
    assert result.snapshot_error is None
    assert set(result.dags) == demo_dag_ids


def test_config_by_dag_id_finds_exactly_that_row(demo_snapshot_path, demo_configs):
    with Snapshot(demo_snapshot_path) as snap:
        found = snap.config_by_dag_id("cust_globex_001.globex_aws_cost_daily")
        assert found is not None
        assert found.config_id == "globex_aws_cost_daily"
        assert found.dag_id == "cust_globex_001.globex_aws_cost_daily"
        expected = next(c for c in demo_configs if c["config_id"] == "globex_aws_cost_daily")
        assert found.row["schedule_cron"] == expected["schedule_cron"]
        assert found.row["customer_id"] == "cust_globex_001"
        assert snap.config_by_dag_id("cust_globex_001.nope") is None
        assert snap.config_by_dag_id("globex_aws_cost_daily") is None


def test_invalid_customer_row_is_skipped_and_its_configs_report_no_such_customer(
    write_snap, demo_customers, demo_configs, settings
):
    customers = [{**c, "status": "ON_HOLIDAY"} if c["customer_id"] == "cust_globex_001" else c for c in demo_customers]
    path = write_snap(customers, demo_configs)
    with Snapshot(path) as snap:
        assert set(snap.customers()) == {"cust_acme_001"}
        assert snap.customer("cust_globex_001") is None  # as customers() has it, not an exception
        result = factory.build_dags(snap, settings)
    assert set(result.dags) == {"cust_acme_001.acme_gcp_cost_daily", "cust_acme_001.acme_gcp_security_weekly"}
    assert sorted((e.config_id, e.reason) for e in result.errors) == [
        ("globex_aws_cost_daily", "customer_id: no such customer"),
        ("globex_azure_compliance_monthly", "customer_id: no such customer"),
    ]


def test_an_invalid_customer_row_with_hostile_values_is_logged_on_one_line(write_snap, demo_customers, caplog):
    hostile = {**demo_customers[0], "customer_id": "cust\n\x1b[31mfake", "status": "ON\tHOLIDAY" + "!" * 1_000_000}
    with (
        caplog.at_level("ERROR", logger="customer_pipelines.snapshot"),
        Snapshot(write_snap([hostile], [])) as snap,
    ):
        assert snap.customers() == {}
    [message] = [r.getMessage() for r in caplog.records]
    assert message.isprintable() and len(message) < 2_000, message[:300]
    assert "'cust\\n\\x1b[31mfake'" in message and "status" in message


@pytest.mark.parametrize("shards", [1, 2, 3, 7])
def test_shards_partition_the_configs(write_snap, fleet_snapshot_rows, shards):
    customers, configs = fleet_snapshot_rows
    with Snapshot(write_snap(customers, configs)) as snap:
        everything = [r.config_id for r in snap.configs()]
        parts = [[r.config_id for r in snap.configs(shard=i, shards=shards)] for i in range(shards)]
    assert len(everything) == len(configs)
    flat = [config_id for part in parts for config_id in part]
    assert len(flat) == len(set(flat)), "a config is in two shards"
    assert sorted(flat) == sorted(everything)
    if shards > 1:
        assert all(parts), "with ~200 configs every shard holds some"


def _shard_of_each(path: Path, shards: int) -> dict[str, int]:
    with Snapshot(path) as snap:
        return {r.config_id: i for i in range(shards) for r in snap.configs(shard=i, shards=shards)}


def test_a_configs_shard_does_not_change_when_other_configs_come_and_go(tmp_path, write_snap, fleet_snapshot_rows):
    customers, configs = fleet_snapshot_rows
    before = _shard_of_each(write_snap(customers, configs, path=tmp_path / "a.sqlite"), 4)

    kept = configs[::3]
    added = [{**configs[0], "config_id": f"added_{n}"} for n in range(60)]
    after = _shard_of_each(write_snap(customers, kept + added, path=tmp_path / "b.sqlite"), 4)

    assert set(after) == {c["config_id"] for c in kept + added}
    assert {cid: after[cid] for cid in (c["config_id"] for c in kept)} == {
        cid: before[cid] for cid in (c["config_id"] for c in kept)
    }


def test_bucket_depends_on_the_config_id_only():
    assert snapshot.bucket_of("acme_gcp_cost_daily") == snapshot.bucket_of("acme_gcp_cost_daily")
    assert 0 <= snapshot.bucket_of("x") < snapshot.BUCKETS
    assert len({snapshot.bucket_of(f"cfg_{n}") for n in range(500)}) > 400


def test_payload_keeps_unknown_columns_and_serialises_decimals(write_snap, demo_customers, demo_configs):
    from decimal import Decimal

    row = {**demo_configs[0], "cost_hint": Decimal("1.50")}
    with Snapshot(write_snap(demo_customers, [row])) as snap:
        stored = next(iter(snap.configs())).row
    assert stored["cost_hint"] == 1.5
    assert json.dumps(stored)  # plain JSON all the way down


# -- runnable anchors (the first-tick anchor of each DAG) -----------------------------------------

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def _anchors(path) -> dict:
    with Snapshot(path) as snap:
        return {dag_id: since for dag_id, (since, _) in snap.anchors().items()}


@pytest.fixture
def demo_configs(demo_configs):
    """The demo configs as last edited a day before T0 (the seed stamps them with today's time)."""
    return [{**c, "updated_at": T0 - timedelta(days=1)} for c in demo_configs]


def _write_at(path, customers, configs, now):
    return snapshot.write_snapshot(path, customers, configs, source="test", now=now)


def test_a_first_generation_anchors_every_runnable_config_at_now_and_the_rest_not_at_all(
    tmp_path, demo_customers, demo_configs
):
    configs = [dict(c) for c in demo_configs]
    configs[0]["is_active"] = False
    path = _write_at(tmp_path / "configs.sqlite", demo_customers, configs, T0)
    inactive = f"{configs[0]['customer_id']}.{configs[0]['config_id']}"
    anchors = _anchors(path)
    assert inactive not in anchors
    assert set(anchors.values()) == {T0} and len(anchors) == len(configs) - 1
    with Snapshot(path) as snap:
        assert snap.config_by_dag_id(inactive).runnable_since is None


def test_anchors_stay_put_across_refreshes_while_the_config_stays_runnable(tmp_path, demo_customers, demo_configs):
    path = _write_at(tmp_path / "configs.sqlite", demo_customers, demo_configs, T0)
    for minutes in (1, 2, 60, 24 * 60):
        _write_at(path, demo_customers, demo_configs, T0 + timedelta(minutes=minutes))
    assert set(_anchors(path).values()) == {T0}
    # A worker's one-row read and a shard read see the same anchor.
    with Snapshot(path) as snap:
        assert {row.runnable_since for row in snap.configs(shard=0, shards=1)} == {T0}


def test_a_config_created_between_refreshes_is_anchored_at_its_own_creation_not_the_refresh(
    tmp_path, demo_customers, demo_configs
):
    path = _write_at(tmp_path / "configs.sqlite", demo_customers, demo_configs, T0)
    created = T0 + timedelta(seconds=50)
    new = {**demo_configs[0], "config_id": "brand_new", "created_at": created, "updated_at": created}
    _write_at(path, demo_customers, [*demo_configs, new], T0 + timedelta(seconds=90))
    assert _anchors(path)[f"{new['customer_id']}.brand_new"] == created


def test_a_new_configs_old_or_missing_updated_at_never_anchors_it_before_the_previous_generation(
    tmp_path, demo_customers, demo_configs
):
    path = _write_at(tmp_path / "configs.sqlite", demo_customers, demo_configs, T0)
    old = {**demo_configs[0], "config_id": "backdated", "updated_at": datetime(2020, 1, 1, tzinfo=UTC)}
    unknown = {**demo_configs[0], "config_id": "no_timestamp", "updated_at": None}
    future = {**demo_configs[0], "config_id": "clock_skew", "updated_at": T0 + timedelta(days=1)}
    later = T0 + timedelta(minutes=1)
    _write_at(path, demo_customers, [*demo_configs, old, unknown, future], later)
    anchors = _anchors(path)
    customer = demo_configs[0]["customer_id"]
    assert anchors[f"{customer}.backdated"] == T0
    assert anchors[f"{customer}.no_timestamp"] == T0
    assert anchors[f"{customer}.clock_skew"] == later  # never in the future


def test_re_enabling_a_config_or_reactivating_its_customer_or_changing_its_schedule_moves_the_anchor(
    tmp_path, demo_customers, demo_configs
):
    path = _write_at(tmp_path / "configs.sqlite", demo_customers, demo_configs, T0)
    first = demo_configs[0]
    customer_id = first["customer_id"]
    paused = [{**c, "is_active": False} if c is first else c for c in demo_configs]
    suspended = [{**c, "status": "SUSPENDED"} if c["customer_id"] == customer_id else c for c in demo_customers]
    t1, t2, t3 = (T0 + timedelta(hours=h) for h in (1, 2, 3))
    _write_at(path, suspended, paused, t1)
    assert not any(dag_id.startswith(customer_id) for dag_id in _anchors(path))
    enabled = t1 + timedelta(minutes=30)
    reenabled = [{**c, "is_active": True, "updated_at": enabled} if c is first else c for c in demo_configs]
    _write_at(path, demo_customers, reenabled, t2)
    anchors = _anchors(path)
    first_dag = f"{customer_id}.{first['config_id']}"
    assert anchors[first_dag] == enabled  # the config's own change, after the previous generation
    others = [d for d in anchors if d.startswith(customer_id) and d != first_dag]
    assert others and all(anchors[d] == t1 for d in others)  # the customer's reactivation: seen after t1
    rescheduled = [
        {**c, "schedule_cron": "15 3 * * *"} if c["config_id"] == first["config_id"] else c for c in reenabled
    ]
    _write_at(path, demo_customers, rescheduled, t3)
    assert _anchors(path)[first_dag] == t2


def test_a_customer_without_a_subscription_keeps_its_dags_paused_with_the_reason_in_their_doc(
    write_snap, demo_customers, demo_configs, settings, demo_dag_ids, monkeypatch
):
    lapsed = [
        {**c, "plan": None, "daily_run_limit": None, "monthly_run_limit": None, "max_concurrent_runs": None}
        if c["customer_id"] == "cust_globex_001"
        else c
        for c in demo_customers
    ]
    path = write_snap(lapsed, demo_configs)
    with Snapshot(path) as snap:
        assert not snap.customer("cust_globex_001").has_subscription
        result = factory.build_dags(snap, settings)
    assert result.errors == []
    assert set(result.dags) == demo_dag_ids
    held = result.dags["cust_globex_001.globex_aws_cost_daily"]
    assert held.is_paused_upon_creation is True
    assert "no subscription in force" in held.doc_md and "NO_SUBSCRIPTION" in held.doc_md
    assert result.dags["cust_acme_001.acme_gcp_cost_daily"].is_paused_upon_creation is False
    factory.raise_config_errors(path, settings)  # nothing to report: no "no such customer"
    # A worker that runs one of its tasks builds its DAG too.
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "cust_globex_001.globex_aws_cost_daily")
    assert set(factory.load_fleet(snapshot_path=path, settings=settings).dags) == {
        "cust_globex_001.globex_aws_cost_daily"
    }


def test_a_shard_parse_that_a_refresh_overtook_builds_again_from_the_new_generation(
    settings, write_snap, demo_customers, demo_configs, monkeypatch
):
    """Airflow drops a parse request for a file it is parsing at that moment: the parse that read
    the old generation must not be the last word, so it builds again from the swapped-in one."""
    path = write_snap(demo_customers, demo_configs[:2], path=settings.snapshot_file)
    original = factory.build_dags
    built_from: list[int] = []

    def build_while_a_refresh_swaps(snap: Snapshot, *args, **kwargs):
        built_from.append(len(list(snap.configs())))
        if len(built_from) == 1:  # the refresh lands during the first build
            write_snap(demo_customers, demo_configs, path=path)
        return original(snap, *args, **kwargs)

    monkeypatch.setattr(factory, "build_dags", build_while_a_refresh_swaps)
    result = factory.load_fleet(settings=settings, shard=0, shards=1)

    assert built_from == [2, len(demo_configs)]
    assert len(result.dags) == len(demo_configs)


def test_the_twin_a_parse_no_refresh_overtook_builds_once(
    settings, write_snap, demo_customers, demo_configs, monkeypatch
):
    write_snap(demo_customers, demo_configs, path=settings.snapshot_file)
    original = factory.build_dags
    calls: list[int] = []

    def counted(snap: Snapshot, *args, **kwargs):
        calls.append(1)
        return original(snap, *args, **kwargs)

    monkeypatch.setattr(factory, "build_dags", counted)
    assert len(factory.load_fleet(settings=settings, shard=0, shards=1).dags) == len(demo_configs)
    assert calls == [1]
