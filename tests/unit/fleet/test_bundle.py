"""The DAGs folder as an Airflow DAG bundle versioned by snapshot generation: the DAG processor's
bundle follows the store's newest generation; a worker's bundle, built by Airflow with the DAG run's
version, makes the factory build the task's DAG from that very generation, not the newest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from customer_pipelines.fleet import factory
from customer_pipelines.fleet.bundle import SnapshotDagBundle
from customer_pipelines.settings import ParseSettings
from customer_pipelines.snapshot import Snapshot, write_snapshot
from customer_pipelines.snapshot_store import SnapshotStore, pin_snapshot, pinned_snapshot, publish_newest

DAGS = Path(__file__).resolve().parents[3] / "dags"


@pytest.fixture(autouse=True)
def _unpinned() -> Iterator[None]:
    pin_snapshot(None)
    yield
    pin_snapshot(None)


def _publish(writer: ParseSettings, customers: list, configs: list) -> int:
    write_snapshot(writer.snapshot_file, customers, configs, source="test")
    publish_newest(writer)
    with Snapshot(writer.snapshot_file) as snapshot:
        return snapshot.generation


def _as_host(monkeypatch: pytest.MonkeyPatch, state: Path, store: Path) -> None:
    """This process as a DAG processor or worker host: its own state directory, the store's URL."""
    monkeypatch.setenv("CP_STATE_DIR", str(state))
    monkeypatch.setenv("CP_SNAPSHOT_STORE_URL", f"file://{store}")


def test_the_dag_processors_bundle_is_the_stores_newest_generation_and_refresh_follows_it(
    tmp_path, monkeypatch, demo_customers, demo_configs
):
    writer = ParseSettings(state_dir=tmp_path / "syncer", snapshot_store_url=f"file://{tmp_path / 'store'}")
    first = _publish(writer, demo_customers, demo_configs)
    _as_host(monkeypatch, tmp_path / "dag-processor", tmp_path / "store")

    bundle = SnapshotDagBundle(name="dags-folder", path=str(DAGS))
    bundle.initialize()
    assert bundle.supports_versioning
    assert bundle.get_current_version().version == str(first)
    assert bundle.path == DAGS, "the DAG files are the same code in every version"
    own = tmp_path / "dag-processor" / "snapshot" / "configs.sqlite"
    assert own.read_bytes() == writer.snapshot_file.read_bytes()

    second = _publish(writer, demo_customers, demo_configs[:1])
    assert bundle.get_current_version().version == str(first), "the version moves at a refresh, not before"
    bundle.refresh()
    assert bundle.get_current_version().version == str(second)
    with Snapshot(own) as snapshot:
        assert snapshot.generation == second
    assert pinned_snapshot() is None, "the DAG processor's parses read its own snapshot file"


def test_a_workers_task_builds_its_dag_from_the_generation_of_its_run_not_the_newest(
    tmp_path, monkeypatch, demo_customers, demo_configs, settings
):
    writer = ParseSettings(state_dir=tmp_path / "syncer", snapshot_store_url=f"file://{tmp_path / 'store'}")
    first = _publish(writer, demo_customers, demo_configs)
    gone = demo_configs[-1]
    dag_id = f"{gone['customer_id']}.{gone['config_id']}"
    second = _publish(writer, demo_customers, demo_configs[:-1])  # that config deleted since
    assert SnapshotStore(str(writer.snapshot_store_url)).current() == second
    _as_host(monkeypatch, tmp_path / "worker", tmp_path / "store")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", dag_id)  # as Airflow's task runner sets it

    pinned = SnapshotDagBundle(name="dags-folder", path=str(DAGS), version=str(first))
    pinned.initialize()
    assert pinned.get_current_version().version == str(first)
    assert pinned_snapshot() == tmp_path / "worker" / "snapshot-cache" / f"configs-{first:012d}.sqlite"
    built = factory.load_fleet()
    assert list(built.dags) == [dag_id], built.snapshot_error
    with pytest.raises(ValueError, match="pinned to generation"):
        pinned.refresh()

    newest = SnapshotDagBundle(name="dags-folder", path=str(DAGS), version=str(second))
    newest.initialize()
    assert factory.load_fleet().dags == {}, "in the newest generation that config is gone"


def test_a_version_that_is_not_a_generation_is_refused(tmp_path, monkeypatch):
    _as_host(monkeypatch, tmp_path / "worker", tmp_path / "store")
    with pytest.raises(ValueError, match="'abc123' is not a snapshot generation"):
        SnapshotDagBundle(name="dags-folder", path=str(DAGS), version="abc123").initialize()


def test_a_dag_processor_restarted_while_the_store_is_unreachable_serves_the_generation_it_has(
    tmp_path, monkeypatch, demo_customers, demo_configs
):
    writer = ParseSettings(state_dir=tmp_path / "syncer", snapshot_store_url=f"file://{tmp_path / 'store'}")
    first = _publish(writer, demo_customers, demo_configs)
    _as_host(monkeypatch, tmp_path / "dag-processor", tmp_path / "store")
    SnapshotDagBundle(name="dags-folder", path=str(DAGS)).initialize()
    # The store's CURRENT unreadable (as an outage answers): the restarted processor keeps its copy.
    (tmp_path / "store" / "CURRENT").write_text("<html>503</html>")
    restarted = SnapshotDagBundle(name="dags-folder", path=str(DAGS))
    restarted.initialize()
    assert restarted.get_current_version().version == str(first)
    # With no copy at all there is nothing to serve: the error is Airflow's to log.
    _as_host(monkeypatch, tmp_path / "new-dag-processor", tmp_path / "store")
    with pytest.raises(Exception, match="CURRENT is unreadable"):
        SnapshotDagBundle(name="dags-folder", path=str(DAGS)).initialize()
