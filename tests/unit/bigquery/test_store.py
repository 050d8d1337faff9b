"""bigquery/store.py without BigQuery: a store's tables are those of its plane."""

from __future__ import annotations

import pytest

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.settings import Settings


def test_the_control_store_names_control_tables(split_settings):
    assert BigQueryStore(split_settings).table_id("customers") == "control-proj.meta_ds.customers"


def test_the_data_store_names_data_tables_in_the_data_project(split_settings):
    store = BigQueryStore(split_settings, plane="data")
    assert store.table_id("billing_export") == "acme-data.data_ds.billing_export"


def test_without_a_data_project_the_data_tables_are_in_the_control_project(tmp_path):
    store = BigQueryStore(Settings(state_dir=tmp_path, bq_project="control-proj"), plane="data")
    assert store.table_id("cost_daily") == "control-proj.customer_pipeline_data.cost_daily"


def test_for_plane_gives_the_other_planes_store_with_the_same_settings(split_settings):
    control = BigQueryStore(split_settings)
    data = control.for_plane("data")
    assert control.for_plane("control") is control
    assert (data.plane, data.settings) == ("data", split_settings)
    assert data.for_plane("data") is data


def test_an_unknown_plane_is_refused(split_settings):
    with pytest.raises(ValueError, match="plane"):
        BigQueryStore(split_settings, plane="customers")


class InsertAllClient:
    """A stand-in for google-cloud-bigquery's client answering insertAll as BigQuery does (the
    emulator answers a bad row with a 500 for the whole request, not per-row errors): a row whose
    ``note`` is ``bad`` is refused ``invalid``, ``busy`` is refused ``backendError``, and the other
    rows of such a request come back ``stopped`` (insertAll writes nothing of a request with errors)."""

    def __init__(self) -> None:
        self.requests: list[list[dict]] = []
        self.written: list[dict] = []

    def insert_rows_json(self, table, rows, row_ids=None, retry=None, timeout=None):
        self.requests.append(list(rows))
        reasons = {i: {"bad": "invalid", "busy": "backendError"}.get(r.get("note")) for i, r in enumerate(rows)}
        if not any(reasons.values()):
            self.written += rows
            return []
        return [
            {"index": i, "errors": [{"reason": reason or "stopped", "message": "m"}]} for i, reason in reasons.items()
        ]


def test_large_inserts_are_split_into_requests_within_bigquerys_limits(split_settings):
    client = InsertAllClient()
    store = BigQueryStore(split_settings, client=client)
    store.insert_rows("scheduled_pipeline_runs", [{"n": i} for i in range(1_201)])
    assert [len(r) for r in client.requests] == [500, 500, 201]
    big = [{"n": i, "blob": "x" * 100_000} for i in range(120)]
    client.requests.clear()
    store.insert_rows("scheduled_pipeline_runs", big)
    assert all(sum(len(str(r)) for r in request) <= 5.5 * 1024 * 1024 for request in client.requests)
    assert len(client.requests) >= 3 and sum(map(len, client.requests)) == 120


def test_rows_stopped_by_a_refused_row_are_sent_again_and_the_refusals_are_told_apart(split_settings):
    from customer_pipelines.bigquery.store import RejectedRows

    client = InsertAllClient()
    store = BigQueryStore(split_settings, client=client)
    rows = [{"n": 0}, {"n": 1, "note": "bad"}, {"n": 2}, {"n": 3, "note": "busy"}]
    with pytest.raises(RejectedRows) as raised:
        store.insert_rows("scheduled_pipeline_runs", rows, row_ids=["a", "b", "c", "d"])
    assert set(raised.value.rejected) == {1} and raised.value.transient == {3}
    assert [r["n"] for r in client.written] == [0, 2]  # the stopped rows, sent again on their own
