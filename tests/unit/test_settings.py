"""settings.py: the data plane's settings default to the control plane's and are validated alike."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from customer_pipelines.settings import Settings


def test_the_data_plane_defaults_to_the_control_planes_bigquery(tmp_path):
    settings = Settings(
        state_dir=tmp_path, bq_project="control-proj", gcp_conn_id="ctl_conn", bigquery_emulator_host="127.0.0.1:9"
    )
    assert (settings.data_gcp_conn_id, settings.data_bq_project, settings.data_bigquery_emulator_host) == (
        None,
        None,
        None,
    )
    assert settings.data_plane_conn_id == "ctl_conn"
    assert settings.data_plane_project == "control-proj"
    assert settings.data_plane_emulator_host == "127.0.0.1:9"
    assert settings.data_plane_emulator_url == settings.emulator_url == "http://127.0.0.1:9"
    assert (settings.data_emulator_port, settings.data_emulator_grpc_port) == (None, None)


def test_data_plane_settings_of_their_own_take_precedence(tmp_path):
    settings = Settings(
        state_dir=tmp_path,
        bq_project="control-proj",
        bigquery_emulator_host="127.0.0.1:9",
        data_gcp_conn_id="acme_data",
        data_bq_project="acme-data",
        data_bigquery_emulator_host="127.0.0.1:10",
    )
    assert (settings.conn_id_of("data"), settings.project_of("data")) == ("acme_data", "acme-data")
    assert settings.emulator_url_of("data") == "http://127.0.0.1:10"
    assert (settings.conn_id_of("control"), settings.project_of("control")) == (
        "customer_pipelines_bigquery",
        "control-proj",
    )
    assert settings.emulator_url_of("control") == "http://127.0.0.1:9"


def test_a_data_plane_emulator_does_not_put_the_control_plane_on_an_emulator(tmp_path):
    settings = Settings(state_dir=tmp_path, data_bigquery_emulator_host="127.0.0.1:10")
    assert settings.emulator_url_of("control") is None
    assert settings.emulator_url_of("data") == "http://127.0.0.1:10"


def test_data_plane_settings_come_from_cp_data_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("CP_DATA_GCP_CONN_ID", "acme_data")
    monkeypatch.setenv("CP_DATA_BQ_PROJECT", "acme-data")
    monkeypatch.setenv("CP_DATA_BIGQUERY_EMULATOR_HOST", "127.0.0.1:10")
    monkeypatch.setenv("CP_DATA_EMULATOR_PORT", "9051")
    monkeypatch.setenv("CP_DATA_EMULATOR_GRPC_PORT", "9061")
    settings = Settings(state_dir=tmp_path)
    assert (settings.data_plane_conn_id, settings.data_plane_project, settings.data_plane_emulator_host) == (
        "acme_data",
        "acme-data",
        "127.0.0.1:10",
    )
    assert (settings.data_emulator_port, settings.data_emulator_grpc_port) == (9051, 9061)


@pytest.mark.parametrize("value", ["Acme_Data", "acme-data`; DROP", "1acme", ""])
def test_the_data_project_is_validated_like_the_project(tmp_path, value):
    with pytest.raises(ValidationError, match="data_bq_project"):
        Settings(state_dir=tmp_path, data_bq_project=value)


def test_the_data_project_from_the_environment_is_validated_too(tmp_path, monkeypatch):
    monkeypatch.setenv("CP_DATA_BQ_PROJECT", "x; DROP")
    with pytest.raises(ValidationError, match="data_bq_project"):
        Settings(state_dir=tmp_path)


def _readme_configuration_table() -> dict[str, str]:
    """variable -> default column of the README's *Configuration* table (a row may name several)."""
    from customer_pipelines.settings import REPO_ROOT

    section = REPO_ROOT.joinpath("README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    table: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            for name in cells[0].replace("`", "").split(","):
                table[name.strip()] = cells[1]
    return table


def test_every_setting_has_a_row_in_the_readme_configuration_table():
    table = _readme_configuration_table()
    missing = []
    for name, field in Settings.model_fields.items():
        aliases = getattr(field.validation_alias, "choices", None) or [f"CP_{name.upper()}"]
        if not any(alias in table for alias in aliases):
            missing.append(aliases[0])
    assert not missing, f"settings without a row in README *Configuration*: {missing}"


def test_the_readme_configuration_table_names_no_setting_that_does_not_exist():
    known = {"BIGQUERY_EMULATOR_HOST"} | {f"CP_{name.upper()}" for name in Settings.model_fields}
    assert set(_readme_configuration_table()) - known == set()


def test_the_readme_configuration_table_shows_each_settings_default():
    table = _readme_configuration_table()
    wrong = {}
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, int | float | str) and not isinstance(default, bool):
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            if f"`{shown}`" not in table[f"CP_{name.upper()}"]:
                wrong[f"CP_{name.upper()}"] = (shown, table[f"CP_{name.upper()}"])
    assert not wrong, f"README *Configuration* shows another default: {wrong}"
