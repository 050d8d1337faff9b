"""local/: the stack runs the data plane's emulator only when asked, and hands the data plane's
settings to every Airflow process."""

from __future__ import annotations

import json

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


# -- the stack's settings, recorded for the commands run by hand ----------------------------------


def test_the_stack_records_its_settings_for_its_owner_only_and_none_of_the_shells(tmp_path):
    from customer_pipelines.local.environment import record_stack_environment

    env = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "PYTHONPATH": "/repo/plugins",
        "_AIRFLOW_PARSING_CONTEXT_DAG_ID": "x.y",
        "CP_BQ_PROJECT": "acme-project",
        "BIGQUERY_EMULATOR_HOST": "127.0.0.1:9050",
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://postgres:@/airflow?host=/tmp/s",
    }
    path = record_stack_environment(env, tmp_path)

    assert path == tmp_path / "stack-environment.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == {
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql+psycopg2://postgres:@/airflow?host=/tmp/s",
        "BIGQUERY_EMULATOR_HOST": "127.0.0.1:9050",
        "CP_BQ_PROJECT": "acme-project",
    }
    assert [p.name for p in tmp_path.iterdir()] == ["stack-environment.json"], "no temporary file is left"


def test_a_newer_record_replaces_the_older_one_and_stays_owner_only(tmp_path):
    from customer_pipelines.local.environment import record_stack_environment

    path = record_stack_environment({"CP_AIRFLOW_PORT": "8080", "CP_DATA_EMULATOR_PORT": "9051"}, tmp_path)
    path.chmod(0o644)
    record_stack_environment({"CP_AIRFLOW_PORT": "8081"}, tmp_path)
    assert json.loads(path.read_text()) == {"CP_AIRFLOW_PORT": "8081"}
    assert path.stat().st_mode & 0o777 == 0o600


def test_recorded_settings_fill_in_only_what_the_user_has_not_set(tmp_path):
    from customer_pipelines.local.environment import apply_stack_environment, record_stack_environment

    record_stack_environment(
        {"CP_BQ_PROJECT": "stack-project", "BIGQUERY_EMULATOR_HOST": "127.0.0.1:9050", "AIRFLOW_HOME": "/s/airflow"},
        tmp_path,
    )
    environ = {"CP_STATE_DIR": str(tmp_path), "CP_BQ_PROJECT": "my-project", "PATH": "/usr/bin"}

    assert apply_stack_environment(environ) == tmp_path / "stack-environment.json"
    assert environ == {
        "CP_STATE_DIR": str(tmp_path),
        "CP_BQ_PROJECT": "my-project",  # set explicitly: wins
        "PATH": "/usr/bin",
        "BIGQUERY_EMULATOR_HOST": "127.0.0.1:9050",
        "AIRFLOW_HOME": "/s/airflow",
    }


def test_the_stacks_own_environment_round_trips_through_the_record(tmp_path):
    from customer_pipelines.local.environment import apply_stack_environment, is_stack_setting, record_stack_environment

    settings = with_embedded_defaults(Settings(state_dir=tmp_path, emulator_port=9150, airflow_port=8180))
    env = airflow_env(settings, "postgresql://postgres:@/airflow?host=/tmp/s")
    record_stack_environment(env, tmp_path)
    environ = {"CP_STATE_DIR": str(tmp_path)}
    apply_stack_environment(environ)
    assert environ == {name: value for name, value in env.items() if is_stack_setting(name)}
    assert environ["BIGQUERY_EMULATOR_HOST"] == "127.0.0.1:9150"
    assert environ["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert "AIRFLOW__CORE__FERNET_KEY" in environ and "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in environ


def test_with_nothing_recorded_airflows_home_is_still_the_state_directorys_never_the_users(tmp_path):
    from customer_pipelines.local.environment import apply_stack_environment

    environ = {"CP_STATE_DIR": str(tmp_path), "HOME": "/home/someone"}
    assert apply_stack_environment(environ) is None
    assert environ["AIRFLOW_HOME"] == str(tmp_path / "airflow")


def test_without_cp_state_dir_the_stacks_default_state_directory_is_used():
    from customer_pipelines.local.environment import apply_stack_environment
    from customer_pipelines.settings import default_state_dir

    environ: dict[str, str] = {}
    apply_stack_environment(environ)
    assert environ["AIRFLOW_HOME"] == str(default_state_dir() / "airflow")
    assert Settings().state_dir == default_state_dir()


def test_stack_up_does_not_take_the_previous_stacks_settings(tmp_path):
    from customer_pipelines.local.environment import apply_stack_environment, record_stack_environment

    record_stack_environment({"CP_DATA_EMULATOR_PORT": "9051"}, tmp_path)
    environ = {"CP_STATE_DIR": str(tmp_path)}
    assert apply_stack_environment(environ, recorded=False) is None
    assert environ == {"CP_STATE_DIR": str(tmp_path), "AIRFLOW_HOME": str(tmp_path / "airflow")}


def test_an_unreadable_record_is_an_error_naming_the_file(tmp_path):
    from customer_pipelines.local.environment import StackEnvironmentError, apply_stack_environment

    (tmp_path / "stack-environment.json").write_text("{not json")
    with pytest.raises(StackEnvironmentError, match=r"stack-environment\.json"):
        apply_stack_environment({"CP_STATE_DIR": str(tmp_path)})


def test_with_a_snapshot_store_the_dag_processor_and_each_worker_get_a_state_directory_of_their_own(tmp_path):
    from customer_pipelines.local.airflow import SNAPSHOT_BUNDLE, component_env, components_of

    settings = Settings(
        state_dir=tmp_path / "state", executor="CeleryExecutor", snapshot_store_url=f"file://{tmp_path / 'store'}"
    )
    env = airflow_env(settings, "postgresql://x/y")
    [bundle] = json.loads(env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    assert (bundle["name"], bundle["classpath"]) == ("dags-folder", SNAPSHOT_BUNDLE)
    own = {c: component_env(settings, env, c)["CP_STATE_DIR"] for c in components_of(settings)}
    remote = {c: d for c, d in own.items() if c == "dag-processor" or c.startswith("celery-worker-")}
    assert set(remote) == {"dag-processor", "celery-worker-1", "celery-worker-2"}
    assert len(set(remote.values())) == 3 and str(settings.state_dir) not in remote.values()
    assert all(own[c] == str(settings.state_dir) for c in own if c not in remote), "the control plane shares one"
    for component, directory in remote.items():
        assert component_env(settings, env, component)["CP_SNAPSHOT_STORE_URL"] == settings.snapshot_store_url
        assert directory == str(tmp_path / "state" / "hosts" / component)
    # Without a store nothing changes: every process reads the one snapshot.
    plain = settings.model_copy(update={"snapshot_store_url": None})
    plain_env = airflow_env(plain, "postgresql://x/y")
    assert "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST" not in plain_env
    assert component_env(plain, plain_env, "celery-worker-1") is plain_env
