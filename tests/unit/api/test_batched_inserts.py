"""api/service.BatchedInserts: concurrent requests' rows go to BigQuery in few insertAll calls, and
a row BigQuery refuses fails only the request it came from (a stand-in store answering as
bigquery/store.BigQueryStore does)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from customer_pipelines.api.service import BatchedInserts
from customer_pipelines.bigquery.store import RejectedRows, StoreError


class StandInStore:
    def __init__(self, refuse: set[str] = frozenset()) -> None:
        self.calls: list[list[str]] = []
        self.refuse = refuse
        self._lock = threading.Lock()

    def insert_rows(self, table, rows, *, row_ids=None):
        time.sleep(0.05)  # one request's round trip: the others queue meanwhile
        with self._lock:
            self.calls.append(list(row_ids))
        rejected = {i: ["invalid: bad row"] for i, rid in enumerate(row_ids) if rid in self.refuse}
        if rejected:
            raise RejectedRows("refused", rejected)


def test_32_concurrent_rows_are_sent_in_few_calls_each_once():
    store = StandInStore()
    inserts = BatchedInserts(store)
    with ThreadPoolExecutor(max_workers=32) as pool:
        list(pool.map(lambda i: inserts.insert("t", {"i": i}, f"row-{i}"), range(32)))
    sent = [rid for call in store.calls for rid in call]
    assert sorted(sent) == sorted(f"row-{i}" for i in range(32))
    assert len(store.calls) < 10


def test_a_refused_row_fails_only_its_own_request():
    store = StandInStore(refuse={"row-3"})
    inserts = BatchedInserts(store)
    results: dict[int, str] = {}

    def send(i: int) -> None:
        try:
            inserts.insert("t", {"i": i}, f"row-{i}")
            results[i] = "ok"
        except StoreError as exc:
            results[i] = str(exc)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, range(8)))
    assert "row refused" in results[3]
    assert all(results[i] == "ok" for i in range(8) if i != 3)


def test_bigquery_down_fails_every_request_of_the_batch():
    class Down(StandInStore):
        def insert_rows(self, table, rows, *, row_ids=None):
            raise StoreError("insert into t: unavailable")

    with pytest.raises(StoreError, match="unavailable"):
        BatchedInserts(Down()).insert("t", {}, "x")
