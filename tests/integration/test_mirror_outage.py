"""BigQuery unreachable for real (the google client against a closed port): transitions are spooled,
not lost, and delivered once BigQuery is back, without duplicates in the views."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from google.cloud import bigquery

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.runs.mirror import RunIdentity, RunState, RunStateMirror, run_event
from tests_support import free_port

pytestmark = pytest.mark.integration


def test_transitions_written_during_an_outage_arrive_once_afterwards(emulator_settings, tmp_path):
    down = emulator_settings.model_copy(update={"bigquery_emulator_host": f"127.0.0.1:{free_port()}"})
    spool = tmp_path / "spool"
    identity = RunIdentity(
        config_id="cfg",
        customer_id="cust_outage",
        dag_id="cust_outage.cfg",
        run_id=f"outage_{datetime.now(UTC):%H%M%S%f}",
        task_id="run_pipeline",
        try_number=1,
    )
    started = datetime.now(UTC)
    rows = [
        run_event(identity, RunState.RUNNING, source="test", started_at=started),
        run_event(identity, RunState.COMPLETED, source="test", started_at=started, ended_at=datetime.now(UTC)),
    ]

    outage = RunStateMirror(BigQueryStore(down), spool)
    assert [outage.record(r) for r in rows] == [False, False]
    assert outage.backlog() == 2

    live_store = BigQueryStore(emulator_settings)
    back = RunStateMirror(live_store, spool)
    assert back.drain() == 2
    assert back.backlog() == 0
    back.record(rows[1])  # a re-send after the outage changes nothing

    events = live_store.query("queries/runs_of_dag_run.sql", {"dag_id": identity.dag_id, "run_id": identity.run_id})
    assert [e["state"] for e in events] == ["RUNNING", "COMPLETED"]


def test_an_sla_breach_found_during_an_outage_is_spooled_and_delivered_once_afterwards(
    emulator_settings, tmp_path, monkeypatch
):
    import asyncio

    from customer_pipelines.runs.sla import record_sla_breach, sla_spool
    from customer_pipelines.settings import get_settings

    state = tmp_path / "state"
    port = free_port()  # nothing listens: BigQuery is down for the triggerer's callback
    monkeypatch.setenv("CP_STATE_DIR", str(state))
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", f"127.0.0.1:{port}")
    monkeypatch.setenv("CP_BQ_PROJECT", emulator_settings.bq_project)
    get_settings.cache_clear()
    run_id = f"sla_outage_{datetime.now(UTC):%H%M%S%f}"
    try:
        context = {"dag_run": {"dag_id": "cust_sla.cfg", "dag_run_id": run_id}, "deadline": {}}
        asyncio.run(record_sla_breach("cfg", "cust_sla", 30, context))
        spool = sla_spool(get_settings(), BigQueryStore(get_settings()))
        assert spool.backlog() == 1
    finally:
        get_settings.cache_clear()

    live_store = BigQueryStore(emulator_settings)
    back = sla_spool(emulator_settings.model_copy(update={"state_dir": state}), live_store)
    assert back.drain() == 1 and back.backlog() == 0
    back.drain()
    rows = live_store.client.query(
        f"SELECT run_key FROM `{live_store.table_id('sla_breach_events')}` WHERE run_id = @run_id",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[bigquery.ScalarQueryParameter("run_id", "STRING", run_id)]
        ),
    ).result()
    assert [r["run_key"] for r in rows] == [f"cust_sla.cfg/{run_id}"]
