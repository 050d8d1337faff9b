"""The BigQuery write-limits double (tests/bigquery_limits_proxy.py) in front of the real emulator,
driven by the real google-cloud-bigquery client: it refuses what BigQuery refuses (DML over streamed
rows, a 21st queued DML on a table) and forwards everything else unchanged."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from google.api_core.exceptions import BadRequest
from google.cloud import bigquery

from bigquery_limits_proxy import BigQueryLimitsProxy
from customer_pipelines.bigquery.store import BigQueryStore

pytestmark = pytest.mark.integration

STREAMING_BUFFER_MESSAGE = "would affect rows in the streaming buffer, which is not supported"
SCHEMA = [
    bigquery.SchemaField("id", "INT64", mode="REQUIRED"),
    bigquery.SchemaField("name", "STRING"),
    bigquery.SchemaField("active", "BOOL"),
]


@pytest.fixture
def proxy(emulator_settings) -> Iterator[BigQueryLimitsProxy]:
    with BigQueryLimitsProxy(emulator_settings.bigquery_emulator_host) as started:
        yield started


def _store(settings, proxy: BigQueryLimitsProxy) -> BigQueryStore:
    """The project's store, its client pointed at the proxy as BIGQUERY_EMULATOR_HOST would point it."""
    return BigQueryStore(settings.model_copy(update={"bigquery_emulator_host": proxy.host}))


@pytest.fixture
def table(store) -> str:
    """A fresh table of the test dataset, made directly on the emulator (no row in it)."""
    table_id = store.table_id(f"limits_{uuid.uuid4().hex[:10]}")
    store.client.create_table(bigquery.Table(table_id, schema=SCHEMA))
    return table_id


def _run(store: BigQueryStore, sql: str) -> list[dict[str, Any]]:
    return [dict(row.items()) for row in store.client.query(sql).result()]


def test_an_update_over_streamed_rows_is_refused_with_bigquerys_streaming_buffer_message(
    emulator_settings, store, proxy, table
):
    through = _store(emulator_settings, proxy)
    through.insert_rows(table.rsplit(".", 1)[1], [{"id": 1, "name": "a", "active": True}])

    with pytest.raises(BadRequest) as refused:
        _run(through, f"UPDATE `{table}` SET active = FALSE WHERE id = 1")

    assert f"UPDATE or DELETE statement over table {table} {STREAMING_BUFFER_MESSAGE}" in str(refused.value)
    assert refused.value.errors[0]["reason"] == "invalidQuery"
    assert _run(store, f"SELECT active FROM `{table}`") == [{"active": True}]  # never reached the emulator
    assert proxy.stats.streamed_rows[table] == 1
    assert proxy.stats.refused_streaming_buffer[table] == 1
    assert proxy.stats.mutating_dml[table] == 0


@pytest.mark.parametrize(
    "statement",
    [
        "DELETE FROM `{table}` WHERE id = 1",
        "DELETE {short} WHERE TRUE",
        "MERGE INTO `{table}` t USING (SELECT 1 AS id) s ON t.id = s.id WHEN MATCHED THEN UPDATE SET active = FALSE",
        "-- a comment first\nUPDATE {short} SET name = 'b' WHERE TRUE",
    ],
)
def test_delete_and_merge_over_streamed_rows_are_refused_however_the_table_is_named(
    emulator_settings, proxy, table, statement
):
    through = _store(emulator_settings, proxy)
    through.insert_rows(table.rsplit(".", 1)[1], [{"id": 1, "name": "a", "active": True}])
    short = table.split(".", 1)[1]  # dataset.table: the job's project is the table's

    with pytest.raises(BadRequest, match=STREAMING_BUFFER_MESSAGE):
        _run(through, statement.format(table=table, short=short))

    assert proxy.stats.refused == 1


def test_an_update_on_a_table_without_streamed_rows_passes(emulator_settings, store, proxy, table):
    through = _store(emulator_settings, proxy)
    _run(through, f"INSERT INTO `{table}` (id, name, active) VALUES (1, 'a', TRUE)")

    _run(through, f"UPDATE `{table}` SET active = FALSE WHERE id = 1")

    assert _run(store, f"SELECT active FROM `{table}`") == [{"active": False}]
    assert proxy.stats.mutating_dml[table] == 1 and proxy.stats.insert_dml[table] == 1
    assert proxy.stats.refused == 0


def test_an_insert_statement_on_a_streamed_table_passes(emulator_settings, store, proxy, table):
    through = _store(emulator_settings, proxy)
    through.insert_rows(table.rsplit(".", 1)[1], [{"id": 1, "name": "a", "active": True}])

    _run(through, f"INSERT INTO `{table}` (id, name, active) SELECT id + 1, name, FALSE FROM `{table}`")

    assert sorted(r["id"] for r in _run(store, f"SELECT id FROM `{table}`")) == [1, 2]
    assert proxy.stats.insert_dml[table] == 1 and proxy.stats.refused == 0


def test_an_update_passes_once_the_streaming_buffer_window_is_over(emulator_settings, store, table):
    with BigQueryLimitsProxy(emulator_settings.bigquery_emulator_host, streaming_buffer_seconds=1.0) as proxy:
        through = _store(emulator_settings, proxy)
        through.insert_rows(table.rsplit(".", 1)[1], [{"id": 1, "name": "a", "active": True}])
        with pytest.raises(BadRequest, match=STREAMING_BUFFER_MESSAGE):
            _run(through, f"UPDATE `{table}` SET active = FALSE WHERE id = 1")
        time.sleep(1.2)

        _run(through, f"UPDATE `{table}` SET active = FALSE WHERE id = 1")

    assert _run(store, f"SELECT active FROM `{table}`") == [{"active": False}]


def test_reads_and_other_calls_go_through_unchanged(emulator_settings, store, proxy, table):
    through = _store(emulator_settings, proxy)
    through.insert_rows(table.rsplit(".", 1)[1], [{"id": 7, "name": "x", "active": None}])

    assert _run(through, f"SELECT id, name FROM `{table}`") == [{"id": 7, "name": "x"}]
    assert [f.name for f in through.client.get_table(table).schema] == ["id", "name", "active"]
    assert proxy.stats.refused == 0 and proxy.stats.requests >= 3


def test_25_concurrent_updates_on_one_table_run_2_at_a_time_queue_20_and_refuse_the_rest(
    emulator_settings, store, table
):
    rows = ", ".join(f"({i}, 'r{i}', TRUE)" for i in range(25))
    _run(store, f"INSERT INTO `{table}` (id, name, active) VALUES {rows}")
    # Each UPDATE holds its slot 1.5 s, as a BigQuery DML takes seconds: all 25 are outstanding at once.
    with BigQueryLimitsProxy(emulator_settings.bigquery_emulator_host, hold_dml_seconds=1.5) as proxy:
        through = _store(emulator_settings, proxy)
        client = through.client
        client.get_table(table)  # the client's session warm before the burst
        ready = threading.Barrier(25)

        def update(i: int) -> str:
            ready.wait()
            try:
                client.query(f"UPDATE `{table}` SET active = FALSE WHERE id = {i}").result()
            except BadRequest as exc:
                return exc.errors[0]["reason"] + ": " + exc.message
            return "ok"

        with ThreadPoolExecutor(max_workers=25) as pool:
            outcomes = list(pool.map(update, range(25)))

    refused = [o for o in outcomes if o != "ok"]
    assert len(refused) == 3, outcomes
    quota = f"Too many DML statements outstanding against table {table}, limit is 20"
    assert all(o.startswith("quotaExceeded: ") and quota in o for o in refused), refused
    assert proxy.stats.max_running_dml[table] == 2
    assert proxy.stats.max_queued_dml[table] == 20
    assert proxy.stats.mutating_dml[table] == 22
    assert proxy.stats.refused_too_many_dml[table] == 3
    assert len(_run(store, f"SELECT id FROM `{table}` WHERE NOT active")) == 22
