"""store.py without BigQuery: a store's tables are those of its plane."""

from __future__ import annotations

import pytest

from customer_pipelines.settings import Settings
from customer_pipelines.store import BigQueryStore


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
