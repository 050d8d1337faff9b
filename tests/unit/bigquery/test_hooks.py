"""bigquery/hooks.py: a hook serves one plane, with that plane's connection, project and emulator."""

from __future__ import annotations

import pytest
from airflow.exceptions import AirflowNotFoundException
from google.auth.credentials import AnonymousCredentials

from customer_pipelines.bigquery.hooks import CustomerPipelinesBigQueryHook
from customer_pipelines.settings import Settings


def test_the_control_plane_hook_uses_the_control_connection_project_and_emulator(split_settings):
    hook = CustomerPipelinesBigQueryHook(split_settings)
    client = hook.get_client()
    assert (hook.plane, hook.gcp_conn_id, hook.project) == ("control", "customer_pipelines_bigquery", "control-proj")
    assert client.project == "control-proj"
    assert client._connection.API_BASE_URL == "http://127.0.0.1:9050"


def test_the_data_plane_hook_uses_the_data_connection_project_and_emulator(split_settings):
    hook = CustomerPipelinesBigQueryHook(split_settings, plane="data")
    client = hook.get_client()
    assert (hook.plane, hook.gcp_conn_id, hook.project) == ("data", "acme_data", "acme-data")
    assert client.project == "acme-data"
    assert client._connection.API_BASE_URL == "http://127.0.0.1:9051"
    assert isinstance(client._credentials, AnonymousCredentials)


def test_the_data_plane_hook_without_settings_of_its_own_is_the_control_planes(tmp_path):
    settings = Settings(state_dir=tmp_path, bq_project="control-proj", bigquery_emulator_host="127.0.0.1:9050")
    hook = CustomerPipelinesBigQueryHook(settings, plane="data")
    client = hook.get_client()
    assert (hook.gcp_conn_id, client.project) == ("customer_pipelines_bigquery", "control-proj")
    assert client._connection.API_BASE_URL == "http://127.0.0.1:9050"


def test_an_emulator_named_for_the_data_plane_only_gives_the_control_plane_no_anonymous_fallback(tmp_path):
    settings = Settings(state_dir=tmp_path, data_bigquery_emulator_host="127.0.0.1:9051")
    data_hook = CustomerPipelinesBigQueryHook(settings, plane="data")
    assert data_hook.emulator_url == "http://127.0.0.1:9051"
    # Real BigQuery needs the connection's credentials: without one defined the control hook fails.
    with pytest.raises(AirflowNotFoundException):
        CustomerPipelinesBigQueryHook(settings)


def test_the_emulator_connection_fallback_names_the_planes_project(split_settings):
    hook = CustomerPipelinesBigQueryHook(split_settings, plane="data")
    connection = hook.get_connection("no_such_connection_defined")
    assert connection.extra_dejson == {"project": "acme-data"}


def test_an_unknown_plane_is_refused(split_settings):
    with pytest.raises(ValueError, match="plane"):
        CustomerPipelinesBigQueryHook(split_settings, plane="customers")
