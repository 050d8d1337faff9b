"""Paused flags converge on the desired state at every sync round, on real Airflow: a round that
failed half-way or a snapshot refreshed by hand in between never leaves a re-enabled config paused,
and a pause a person made in the UI is kept."""

from __future__ import annotations

import pytest

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.local.stack import run_module
from tests_support import add_customer

pytestmark = pytest.mark.e2e


def _set_active(info, customer_id: str, config_id: str, active: bool) -> None:
    BigQueryStore(info.settings).query(
        "queries/set_config_active.sql",
        {"customer_id": customer_id, "config_id": config_id, "is_active": active, "updated_by": "e2e"},
    )


def _paused_by_a_sync(info, client, customer_id: str, config_id: str) -> str:
    [dag_id] = add_customer(info, customer_id, "PROFESSIONAL", [(config_id, 5)])
    client.wait_for_dags([dag_id], timeout=240)
    assert client.dag(dag_id)["is_paused"] is False
    _set_active(info, customer_id, config_id, False)
    run_module(info.env, "sync")
    assert client.dag(dag_id)["is_paused"] is True
    return dag_id


def test_a_config_re_enabled_and_refreshed_by_the_cli_between_two_rounds_is_unpaused_at_the_next(stack):
    info, client = stack
    dag_id = _paused_by_a_sync(info, client, "cust_pause_cli", "cli_cost")
    _set_active(info, "cust_pause_cli", "cli_cost", True)
    run_module(info.env, "snapshot", "refresh")  # the snapshot already says "runnable" before the round
    run_module(info.env, "sync")
    assert client.dag(dag_id)["is_paused"] is False


def test_a_round_that_fails_after_the_refresh_leaves_nothing_paused_at_the_next_round(stack):
    import psycopg2

    info, client = stack
    dag_id = _paused_by_a_sync(info, client, "cust_pause_fail", "fail_cost")
    _set_active(info, "cust_pause_fail", "fail_cost", True)
    metadata_url = info.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2://", "postgresql://")
    blocker = psycopg2.connect(metadata_url)
    try:
        with blocker.cursor() as cur:  # the pool sync cannot write: the round fails after its refresh
            cur.execute("LOCK TABLE slot_pool IN ACCESS EXCLUSIVE MODE")
            # the syncer's own bound on lock waits (CP_AIRFLOW_DB_LOCK_TIMEOUT_SECONDS) fails the round
            with pytest.raises(RuntimeError, match="lock timeout"):
                run_module({**info.env, "CP_AIRFLOW_DB_LOCK_TIMEOUT_SECONDS": "2"}, "sync")
    finally:
        blocker.rollback()
        blocker.close()
    assert client.dag(dag_id)["is_paused"] is True  # that round never reached the paused flags
    run_module(info.env, "sync")
    assert client.dag(dag_id)["is_paused"] is False


def test_a_dag_a_person_paused_stays_paused_while_its_config_stays_active(stack):
    info, client = stack
    [dag_id] = add_customer(info, "cust_pause_manual", "PROFESSIONAL", [("manual_cost", 5)])
    client.wait_for_dags([dag_id], timeout=240)
    client.set_paused(dag_id, True)
    run_module(info.env, "sync")
    run_module(info.env, "sync")
    assert client.dag(dag_id)["is_paused"] is True


def test_a_config_created_held_by_a_cli_refresh_and_enabled_before_any_round_is_unpaused_at_the_next(stack):
    """The DAG processor creates a held config's DAG paused from a snapshot refreshed by hand; the
    refresh records that pause as the syncer's, so enabling the config before any round unpauses it."""
    from datetime import UTC, datetime

    from customer_pipelines.seed import Dataset, config_row, customer_rows, load_dataset

    info, client = stack
    customer_id, config_id = "cust_pause_new", "new_cost"
    now = datetime.now(UTC)
    customer, subscription = customer_rows(customer_id, "New Inc", "PROFESSIONAL", now=now)
    config = config_row(
        config_id, customer_id, "New", "GCP", "COST", "cost_billing", "0 2 * * *", "UTC", is_active=False, now=now
    )
    data = Dataset(customers=[customer], subscriptions=[subscription], configs=[config])
    load_dataset(BigQueryStore(info.settings), data)
    run_module(info.env, "snapshot", "refresh")  # no sync round: the DAG appears paused, created held
    dag_id = f"{customer_id}.{config_id}"
    client.wait_for_dags([dag_id], timeout=240)
    assert client.dag(dag_id)["is_paused"] is True

    _set_active(info, customer_id, config_id, True)
    run_module(info.env, "sync")
    assert client.dag(dag_id)["is_paused"] is False
