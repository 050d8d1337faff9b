"""api/service.SnapshotPatcher: concurrent writes of the API all land in the snapshot, in fewer
generations than requests (a group commit), and a failed write is reported to every request of it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from customer_pipelines.api.service import SnapshotPatcher
from customer_pipelines.models import dag_id_for
from customer_pipelines.snapshot import Snapshot


def test_32_concurrent_patches_all_land_in_fewer_generations(write_snap, demo_customers, demo_configs):
    path = write_snap(demo_customers, demo_configs)
    template = next(c for c in demo_configs if c["is_active"])
    patcher = SnapshotPatcher(path)
    rows = [{**template, "config_id": f"burst_{i}", "version": 1} for i in range(32)]
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(lambda row: patcher.patch(configs=[row]), rows))
    with Snapshot(path) as snapshot:
        for row in rows:
            assert snapshot.config_by_dag_id(dag_id_for(row["customer_id"], row["config_id"])) is not None
    assert 1 <= patcher.generations_written < 32


def test_a_failed_patch_raises_in_the_request_that_asked(tmp_path):
    patcher = SnapshotPatcher(tmp_path / "missing" / "configs.sqlite")  # no snapshot to patch
    with pytest.raises(Exception, match="no readable config snapshot"):
        patcher.patch(configs=[{"customer_id": "c", "config_id": "x"}])


def test_with_a_store_each_patch_is_published_and_one_the_store_refuses_leaves_its_parse_to_the_syncer(
    tmp_path, demo_customers, demo_configs
):
    """The store refusing a write is simulated by a store URL under a regular file; a real
    ``file://`` store otherwise."""
    from customer_pipelines.fleet.shards import files_to_reparse
    from customer_pipelines.settings import Settings
    from customer_pipelines.snapshot import write_snapshot
    from customer_pipelines.snapshot_store import SnapshotStore
    from customer_pipelines.syncer import PENDING_PARSES_FILE

    settings = Settings(state_dir=tmp_path / "state", snapshot_store_url=f"file://{tmp_path / 'store'}")
    write_snapshot(settings.snapshot_file, demo_customers, demo_configs, source="test")
    template = next(c for c in demo_configs if c["is_active"])
    SnapshotPatcher(settings.snapshot_file, settings).patch(
        configs=[{**template, "config_id": "published", "version": 1}]
    )
    with Snapshot(settings.snapshot_file) as snapshot:
        assert SnapshotStore(str(settings.snapshot_store_url)).current() == snapshot.generation

    blocked = tmp_path / "blocked"
    blocked.write_text("not a directory")
    refused = settings.model_copy(update={"snapshot_store_url": f"file://{blocked}/store"})
    row = {**template, "config_id": "not_published", "version": 1}
    with pytest.raises(Exception):  # noqa: B017 - whatever the store raises reaches the request
        SnapshotPatcher(refused.snapshot_file, refused).patch(configs=[row])
    pending = (settings.state_dir / PENDING_PARSES_FILE).read_text()
    for file in files_to_reparse([dag_id_for(row["customer_id"], row["config_id"])], settings.fleet_shards):
        assert file in pending
