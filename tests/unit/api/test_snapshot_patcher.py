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
