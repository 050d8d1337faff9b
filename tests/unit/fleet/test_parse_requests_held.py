"""A parse request that Airflow's DAG processor claims while its file is being parsed is parsed after
that parse, not dropped (fleet/parsing.keep_requests_for_files_being_parsed on Airflow's own
DagFileProcessorManager; only the metadata-database read of the requests is replaced)."""

from __future__ import annotations

from pathlib import Path

import pytest
from airflow.dag_processing.manager import DagFileInfo, DagFileProcessorManager

from customer_pipelines.fleet import parsing


def _file(name: str) -> DagFileInfo:
    path = Path(f"customer_pipelines_fleet/{name}")
    return DagFileInfo(rel_path=path, bundle_name="dags-folder", bundle_path=Path("/dags"))


class RequestsFromAList(DagFileProcessorManager):
    """Airflow's manager whose claimed requests come from a list instead of its database table."""

    pending: list[DagFileInfo]

    def _claim_priority_files(self, *, session=None) -> list[DagFileInfo]:  # type: ignore[override]
        claimed, RequestsFromAList.pending = RequestsFromAList.pending, []
        return claimed


@pytest.fixture
def manager(monkeypatch):
    monkeypatch.setattr(DagFileProcessorManager, "claim_priority_files", DagFileProcessorManager.claim_priority_files)
    parsing.keep_requests_for_files_being_parsed()
    RequestsFromAList.pending = []
    made = RequestsFromAList(max_runs=1)
    yield made
    parsing.HELD_REQUESTS.pop(id(made), None)


def test_a_request_for_a_file_being_parsed_is_queued_once_that_parse_ends(manager):
    busy, idle = _file("shard_00.py"), _file("shard_01.py")
    manager._processors[busy] = object()  # a parse of shard_00 is running
    RequestsFromAList.pending = [busy, idle]
    manager._queue_requested_files_for_parsing()
    assert list(manager._file_queue) == [idle]  # Airflow would have queued shard_00 and then skipped it
    manager._file_queue.clear()
    manager._queue_requested_files_for_parsing()
    assert list(manager._file_queue) == []  # still parsing: still held
    del manager._processors[busy]  # the parse ended
    manager._queue_requested_files_for_parsing()
    assert list(manager._file_queue) == [busy]
    manager._file_queue.clear()
    manager._queue_requested_files_for_parsing()
    assert list(manager._file_queue) == []  # handed over once


def test_requests_for_files_not_being_parsed_are_queued_at_once_as_airflow_does(manager):
    files = [_file("shard_02.py"), _file("shard_03.py")]
    RequestsFromAList.pending = list(files)
    manager._queue_requested_files_for_parsing()
    assert set(manager._file_queue) == set(files)
    assert id(manager) not in parsing.HELD_REQUESTS


def test_installing_twice_wraps_airflows_claim_once(manager):
    wrapped = DagFileProcessorManager.claim_priority_files
    parsing.keep_requests_for_files_being_parsed()
    assert DagFileProcessorManager.claim_priority_files is wrapped
