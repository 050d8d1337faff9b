"""local/: the stack runs the data plane's emulator only when asked, and hands the data plane's
settings to every Airflow process."""

from __future__ import annotations

import pytest

from customer_pipelines.local import emulator
from customer_pipelines.local.airflow import airflow_env
from customer_pipelines.local.stack import with_embedded_defaults
from customer_pipelines.settings import Settings


def test_by_default_the_stack_has_one_emulator_for_both_planes(tmp_path):
    settings = with_embedded_defaults(Settings(state_dir=tmp_path, emulator_port=9050))
    assert settings.bigquery_emulator_host == "127.0.0.1:9050"
    assert settings.data_bigquery_emulator_host is None
    assert settings.data_plane_emulator_url == "http://127.0.0.1:9050"


def test_a_data_emulator_port_gives_the_data_plane_its_own_emulator(tmp_path):
    settings = with_embedded_defaults(
        Settings(state_dir=tmp_path, emulator_port=9050, data_emulator_port=9051, data_emulator_grpc_port=9061)
    )
    assert settings.emulator_url == "http://127.0.0.1:9050"
    assert settings.data_plane_emulator_url == "http://127.0.0.1:9051"


def test_real_bigquery_starts_no_data_emulator_either(tmp_path, monkeypatch):
    monkeypatch.setenv("CP_REAL_BIGQUERY", "true")
    settings = with_embedded_defaults(Settings(state_dir=tmp_path, data_emulator_port=9051))
    assert (settings.bigquery_emulator_host, settings.data_bigquery_emulator_host) == (None, None)


def test_the_data_emulator_is_a_second_instance_with_its_own_name_ports_directories_and_project(tmp_path):
    settings = Settings(
        state_dir=tmp_path, data_emulator_port=9051, data_emulator_grpc_port=9061, data_bq_project="acme-data"
    )
    control, data = emulator.instance(settings), emulator.instance(settings, "data")
    assert (data.name, data.port, data.grpc_port, data.project) == ("bigquery-emulator-data", 9051, 9061, "acme-data")
    assert (control.name, control.port, control.project) == ("bigquery-emulator", 9050, "demo-project")
    assert data.root != control.root and data.root.parent == control.root.parent == tmp_path


def test_the_data_emulator_needs_its_ports(tmp_path):
    with pytest.raises(ValueError, match="CP_DATA_EMULATOR_PORT"):
        emulator.instance(Settings(state_dir=tmp_path), "data")


def test_airflow_processes_get_the_data_planes_settings(tmp_path, monkeypatch):
    settings = with_embedded_defaults(
        Settings(
            state_dir=tmp_path,
            data_gcp_conn_id="acme_data",
            data_bq_project="acme-data",
            data_emulator_port=9051,
            data_emulator_grpc_port=9061,
        )
    )
    env = airflow_env(settings, "postgresql://airflow@127.0.0.1/airflow")
    assert {k: v for k, v in env.items() if k.startswith("CP_DATA_")} == {
        "CP_DATA_GCP_CONN_ID": "acme_data",
        "CP_DATA_BQ_PROJECT": "acme-data",
        "CP_DATA_BIGQUERY_EMULATOR_HOST": "127.0.0.1:9051",
        "CP_DATA_EMULATOR_PORT": "9051",
        "CP_DATA_EMULATOR_GRPC_PORT": "9061",
    }
    for name, value in env.items():  # an Airflow process reads its settings from this environment
        if name.startswith("CP_") or name == "BIGQUERY_EMULATOR_HOST":
            monkeypatch.setenv(name, value)
    in_a_process = Settings()
    assert (in_a_process.data_plane_conn_id, in_a_process.data_plane_project) == ("acme_data", "acme-data")
    assert in_a_process.data_plane_emulator_url == "http://127.0.0.1:9051"


def test_without_data_plane_settings_airflow_processes_get_none(tmp_path):
    env = airflow_env(with_embedded_defaults(Settings(state_dir=tmp_path)), "postgresql://airflow@127.0.0.1/airflow")
    assert not [name for name in env if name.startswith("CP_DATA_")]
