"""snapshot.patch_snapshot: the API's own writes patched into a new generation, without
reading the fleet back from BigQuery; every other config's first-tick anchor carried over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from customer_pipelines.models import dag_id_for
from customer_pipelines.snapshot import Snapshot, patch_snapshot


def test_a_patched_config_change_is_read_and_every_other_anchor_is_kept(write_snap, demo_customers, demo_configs):
    path = write_snap(demo_customers, demo_configs)
    with Snapshot(path) as before:
        anchors = before.anchors()
        before_source = before.meta["source"]
    target = next(c for c in demo_configs if c["is_active"])
    dag_id = dag_id_for(target["customer_id"], target["config_id"])
    later = datetime.now(UTC) + timedelta(seconds=5)
    changed = {**target, "is_active": False, "version": target["version"] + 1, "updated_at": later}
    patch_snapshot(path, configs=[changed], source="api", now=later)
    with Snapshot(path) as after:
        assert after.config_by_dag_id(dag_id).row["is_active"] is False
        assert after.config_by_dag_id(dag_id).runnable_since is None
        assert {d: a for d, a in after.anchors().items()} == {d: a for d, a in anchors.items() if d != dag_id}
        assert after.meta["patched_by"] == "api" and after.meta["source"] == before_source
    enabled = {**changed, "is_active": True, "version": changed["version"] + 1, "updated_at": later}
    patch_snapshot(path, configs=[enabled], source="api", now=later + timedelta(seconds=1))
    with Snapshot(path) as again:
        # enabled again: anchored when it was enabled, so no tick that passed while paused fires
        assert again.config_by_dag_id(dag_id).runnable_since == later


def test_a_deleted_config_is_removed_and_a_new_one_is_added(write_snap, demo_customers, demo_configs):
    path = write_snap(demo_customers, demo_configs)
    gone = demo_configs[0]
    new = {**demo_configs[1], "config_id": "brand_new", "version": 1}
    patch_snapshot(path, configs=[{**gone, "deleted_at": datetime.now(UTC)}, new], source="api")
    with Snapshot(path) as after:
        assert after.config_by_dag_id(dag_id_for(gone["customer_id"], gone["config_id"])) is None
        ids = [r.config_id for r in after.configs_of_customer(new["customer_id"])]
        assert "brand_new" in ids and ids == sorted(ids)
        assert len(list(after.configs())) == len(demo_configs)


def test_a_customer_suspended_by_patch_holds_all_its_configs(write_snap, demo_customers, demo_configs):
    path = write_snap(demo_customers, demo_configs)
    customer = next(c for c in demo_customers if c["status"] == "ACTIVE" and c.get("plan"))
    patch_snapshot(path, customers=[{**customer, "status": "SUSPENDED"}], source="api")
    with Snapshot(path) as after:
        rows = after.configs_of_customer(customer["customer_id"])
        assert rows and all(r.runnable_since is None for r in rows)
        assert after.customer(customer["customer_id"]).status.value == "SUSPENDED"
