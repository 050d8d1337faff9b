"""customers and customer_pipeline_configs as append-only version logs on the emulator: readers see
each one's latest version through the ``_current`` views, and every change appends a version
(INSERT ... SELECT), never an UPDATE, so rows just streamed in by the API can be changed at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from customer_pipelines.bigquery.sql import load_sql
from customer_pipelines.bigquery.store import BigQueryStore, split_statements
from customer_pipelines.models import PipelineConfig
from customer_pipelines.seed import Dataset, config_row, customer_rows, load_dataset
from customer_pipelines.snapshot import Snapshot, refresh_snapshot
from tests_support import rows_of_customer

pytestmark = pytest.mark.integration


def _config(config_id: str, customer_id: str, now: datetime, **fields: Any) -> dict[str, Any]:
    """Version 1 of a config, as seeding writes it."""
    row = config_row(config_id, customer_id, config_id, "GCP", "COST", "cost_billing", "0 2 * * *", "UTC", now=now)
    return {**row, **fields}


def _next_version(row: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """The version after ``row``, written a second later, as a writer of the log makes it."""
    updated_at = row["updated_at"] + timedelta(seconds=1)
    return {**row, "version": row["version"] + 1, "updated_at": updated_at, "updated_by": "test", **changes}


def _load(store: BigQueryStore, customer_ids: list[str], configs: list[dict[str, Any]], now: datetime) -> None:
    """The customers (each with a subscription) and version 1 of their configs, earlier rows replaced."""
    data = Dataset(configs=configs)
    for customer_id in customer_ids:
        customer, subscription = customer_rows(customer_id, f"{customer_id} Inc", "STARTER", now=now)
        data.customers.append(customer)
        data.subscriptions.append(subscription)
    load_dataset(store, data)


def _versions(store: BigQueryStore, customer_id: str, config_id: str) -> list[dict[str, Any]]:
    """Every version of one config in the log, oldest first."""
    rows = rows_of_customer(store, "customer_pipeline_configs", customer_id)
    return sorted((r for r in rows if r["config_id"] == config_id), key=lambda r: r["version"])


def _current(store: BigQueryStore, customer_id: str) -> dict[str, dict[str, Any]]:
    """The snapshot's configs of one customer (not deleted, latest version), by config_id."""
    return {c["config_id"]: c for c in store.fetch_configs() if c["customer_id"] == customer_id}


def _set_active(store: BigQueryStore, customer_id: str, config_id: str, active: bool, by: str = "test") -> None:
    store.query(
        "queries/set_config_active.sql",
        {"customer_id": customer_id, "config_id": config_id, "is_active": active, "updated_by": by},
    )


def test_the_snapshot_has_the_latest_of_a_configs_two_versions(store, tmp_path):
    now = datetime.now(UTC)
    first = _config("versioned_cost", "cust_ver_latest", now)
    _load(store, ["cust_ver_latest"], [first], now)
    store.load_rows("customer_pipeline_configs", [_next_version(first, schedule_cron="30 5 * * *", priority=9)])

    [config] = _current(store, "cust_ver_latest").values()
    assert (config["version"], config["schedule_cron"], config["priority"]) == (2, "30 5 * * *", 9)
    refresh_snapshot(store, tmp_path / "configs.sqlite")
    with Snapshot(tmp_path / "configs.sqlite") as snapshot:
        [row] = [r.row for r in snapshot.configs() if r.row["customer_id"] == "cust_ver_latest"]
    assert (row["version"], row["schedule_cron"], row["priority"]) == (2, "30 5 * * *", 9)


def test_a_version_with_deleted_at_removes_the_config_from_the_snapshot(store, tmp_path):
    now = datetime.now(UTC)
    kept, deleted = _config("kept_cost", "cust_ver_deleted", now), _config("deleted_cost", "cust_ver_deleted", now)
    _load(store, ["cust_ver_deleted"], [kept, deleted], now)
    store.load_rows("customer_pipeline_configs", [_next_version(deleted, deleted_at=now + timedelta(seconds=1))])

    assert set(_current(store, "cust_ver_deleted")) == {"kept_cost"}
    refresh_snapshot(store, tmp_path / "configs.sqlite")
    with Snapshot(tmp_path / "configs.sqlite") as snapshot:
        dag_ids = {r.dag_id for r in snapshot.configs() if r.row["customer_id"] == "cust_ver_deleted"}
    assert dag_ids == {"cust_ver_deleted.kept_cost"}
    # The current view keeps the deleted config (its callers filter deleted_at), its versions stay in the log.
    [current] = rows_of_customer(store, "customer_pipeline_configs_current", "cust_ver_deleted", "AND version = 2")
    assert (current["config_id"], current["deleted_at"] is not None) == ("deleted_cost", True)
    assert [v["version"] for v in _versions(store, "cust_ver_deleted", "deleted_cost")] == [1, 2]


def test_two_customers_with_the_same_config_id_each_keep_their_own_latest_version(store):
    now = datetime.now(UTC)
    one, two = _config("shared_cost", "cust_ver_one", now), _config("shared_cost", "cust_ver_two", now, priority=2)
    _load(store, ["cust_ver_one", "cust_ver_two"], [one, two], now)
    # One customer's config has more versions than the other's: neither may hide the other's.
    store.load_rows("customer_pipeline_configs", [_next_version(one, priority=8)])
    store.load_rows(
        "customer_pipeline_configs",
        [_next_version(_next_version(one, priority=8), priority=9, is_active=False)],
    )

    one_now, two_now = _current(store, "cust_ver_one")["shared_cost"], _current(store, "cust_ver_two")["shared_cost"]
    assert (one_now["version"], one_now["priority"], one_now["is_active"]) == (3, 9, False)
    assert (two_now["version"], two_now["priority"], two_now["is_active"]) == (1, 2, True)


def test_set_config_active_appends_one_version_and_leaves_the_old_row_unchanged(store):
    now = datetime.now(UTC)
    _load(store, ["cust_ver_pause"], [_config("pause_cost", "cust_ver_pause", now)], now)
    [before] = _versions(store, "cust_ver_pause", "pause_cost")

    _set_active(store, "cust_ver_pause", "pause_cost", False, by="ops@example.com")

    old, new = _versions(store, "cust_ver_pause", "pause_cost")
    assert old == before
    assert (new["version"], new["is_active"], new["updated_by"], new["deleted_at"]) == (
        2,
        False,
        "ops@example.com",
        None,
    )
    assert new["created_at"] == before["created_at"] and new["created_by"] == before["created_by"]
    assert new["updated_at"] > before["updated_at"]
    unchanged = ("schedule_cron", "timezone", "priority", "parameters", "retry_config", "pipeline_template")
    assert {k: new[k] for k in unchanged} == {k: before[k] for k in unchanged}
    assert _current(store, "cust_ver_pause")["pause_cost"]["is_active"] is False

    # Each call is one version, even when it changes nothing (the caller's audit matches the log).
    _set_active(store, "cust_ver_pause", "pause_cost", False)
    _set_active(store, "cust_ver_pause", "pause_cost", True)
    versions = _versions(store, "cust_ver_pause", "pause_cost")
    assert [(v["version"], v["is_active"]) for v in versions] == [(1, True), (2, False), (3, False), (4, True)]


def test_set_config_active_appends_nothing_for_a_deleted_or_missing_config(store):
    now = datetime.now(UTC)
    config = _config("gone_cost", "cust_ver_gone", now)
    _load(store, ["cust_ver_gone"], [config], now)
    store.load_rows("customer_pipeline_configs", [_next_version(config, deleted_at=now)])

    _set_active(store, "cust_ver_gone", "gone_cost", True)
    _set_active(store, "cust_ver_gone", "never_was", True)

    assert len(rows_of_customer(store, "customer_pipeline_configs", "cust_ver_gone")) == 2


def test_auto_pause_pauses_exactly_the_listed_active_configs_and_not_another_customers_same_config_id(store):
    now = datetime.now(UTC)
    failing, other = "cust_ver_failing", "cust_ver_other"
    paused_already = _config("paused_cost", failing, now, is_active=False)
    deleted = _config("deleted_cost", failing, now)
    configs = [
        _config("shared_cost", failing, now),
        _config("healthy_cost", failing, now),
        paused_already,
        deleted,
        _config("shared_cost", other, now),
    ]
    _load(store, [failing, other], configs, now)
    store.load_rows("customer_pipeline_configs", [_next_version(deleted, deleted_at=now)])

    store.query(
        "queries/auto_pause_configs.sql",
        {"dag_ids": [f"{failing}.shared_cost", f"{failing}.paused_cost", f"{failing}.deleted_cost"]},
    )

    [_, paused] = _versions(store, failing, "shared_cost")
    assert (paused["version"], paused["is_active"], paused["updated_by"]) == (2, False, "auto-pause")
    # Not listed, already paused, deleted, or another customer's config of that name: no new version.
    assert len(_versions(store, failing, "healthy_cost")) == 1
    assert len(_versions(store, failing, "paused_cost")) == 1
    assert len(_versions(store, failing, "deleted_cost")) == 2
    assert [(v["version"], v["is_active"]) for v in _versions(store, other, "shared_cost")] == [(1, True)]
    assert {k: v["is_active"] for k, v in _current(store, failing).items()} == {
        "shared_cost": False,
        "healthy_cost": True,
        "paused_cost": False,
    }

    # A second round with the same list (a retried sync) appends nothing more.
    store.query("queries/auto_pause_configs.sql", {"dag_ids": [f"{failing}.shared_cost"]})
    assert len(_versions(store, failing, "shared_cost")) == 2


def test_set_customer_status_appends_a_customer_version_and_the_snapshot_reads_the_latest(store):
    now = datetime.now(UTC)
    _load(store, ["cust_ver_status"], [], now)
    [before] = rows_of_customer(store, "customers", "cust_ver_status")

    store.query("queries/set_customer_status.sql", {"customer_id": "cust_ver_status", "status": "SUSPENDED"})

    versions = sorted(rows_of_customer(store, "customers", "cust_ver_status"), key=lambda r: r["updated_at"])
    assert versions[0] == before
    assert [v["status"] for v in versions] == ["ACTIVE", "SUSPENDED"]
    assert versions[1]["created_at"] == before["created_at"]
    assert versions[1]["updated_at"] > before["updated_at"]
    [customer] = [c for c in store.fetch_customers() if c["customer_id"] == "cust_ver_status"]
    assert (customer["status"], customer["plan"]) == ("SUSPENDED", "STARTER")
    [usage] = rows_of_customer(store, "customer_quota_usage", "cust_ver_status")
    assert usage["status"] == "SUSPENDED"  # the monitoring views read the latest version too


def test_a_config_streamed_in_can_be_paused_at_once_by_set_config_active(store):
    # The API's path: a config created by streaming insert (its row in the streaming buffer, which
    # BigQuery's UPDATE/DELETE/MERGE refuse for ~30 minutes) and paused seconds later. The emulator
    # forgives DML on streamed rows, so the statements themselves must be INSERTs.
    statements = split_statements(load_sql("queries/set_config_active.sql", store.settings))
    assert [s.split(None, 2)[:2] for s in statements] == [["INSERT", "INTO"]]
    now = datetime.now(UTC)
    _load(store, ["cust_ver_stream"], [], now)
    store.insert_rows("customer_pipeline_configs", [_config("streamed_cost", "cust_ver_stream", now)])

    _set_active(store, "cust_ver_stream", "streamed_cost", False, by="api")

    versions = _versions(store, "cust_ver_stream", "streamed_cost")
    assert [(v["version"], v["is_active"], v["updated_by"]) for v in versions] == [(1, True, "seed"), (2, False, "api")]
    assert _current(store, "cust_ver_stream")["streamed_cost"]["is_active"] is False


def test_a_configs_catch_up_policy_survives_every_copy_of_it_and_reaches_the_snapshot(store, tmp_path):
    now = datetime.now(UTC)
    customer_id = "cust_ver_catchup"
    _load(store, [customer_id], [_config("catchup", customer_id, now, auto_backfill_ticks=3)], now)
    _set_active(store, customer_id, "catchup", False)
    _set_active(store, customer_id, "catchup", True)
    store.query("queries/auto_pause_configs.sql", {"dag_ids": [f"{customer_id}.catchup"]})
    assert [(v["version"], v["auto_backfill_ticks"]) for v in _versions(store, customer_id, "catchup")] == [
        (1, 3),
        (2, 3),
        (3, 3),
        (4, 3),
    ]
    refresh_snapshot(store, tmp_path / "snapshot.sqlite")
    with Snapshot.open_last_good(tmp_path / "snapshot.sqlite") as snapshot:
        [row] = [r for r in snapshot.configs() if r.row["customer_id"] == customer_id]
    assert PipelineConfig.model_validate(row.row).auto_backfill_ticks == 3
