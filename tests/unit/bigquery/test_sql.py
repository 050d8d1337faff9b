"""bigquery/sql.py and the BigQuery-free parts of bigquery/store.py: identifiers in, values as @parameters."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError

from customer_pipelines.bigquery.sql import load_sql, sql_files
from customer_pipelines.bigquery.store import _json_ready, split_statements
from customer_pipelines.settings import SQL_DIR, Settings
from customer_pipelines.templates import TEMPLATES

BIGQUERY_FOLDERS = ("queries", "schema", "data_schema", "templates", "views")
BIGQUERY_SQL = sorted(
    str(p.relative_to(SQL_DIR)) for folder in BIGQUERY_FOLDERS for p in (SQL_DIR / folder).glob("*.sql")
)

DATA_PLANE_QUERIES = {"queries/delete_customer_data.sql"}
"""Queries on the customers' data; every other query is on the control plane."""


@pytest.fixture
def custom_settings(tmp_path) -> Settings:
    return Settings(state_dir=tmp_path, bq_project="my-proj-123", bq_dataset="meta_ds", bq_data_dataset="data_ds")


def _loads_on(relative_path: str, settings: Settings, plane: str) -> bool:
    try:
        load_sql(relative_path, settings, plane)
    except ValueError:
        return False
    return True


def test_load_sql_substitutes_only_the_project_and_dataset_identifiers(custom_settings):
    raw = (SQL_DIR / "templates" / "cost_billing.sql").read_text()
    loaded = load_sql("templates/cost_billing.sql", custom_settings, "data")
    expected = raw.replace("${project}", "my-proj-123").replace("${data_dataset}", "data_ds")
    assert loaded == expected
    assert "`my-proj-123.data_ds.cost_daily`" in loaded
    assert "${" not in loaded


def test_load_sql_on_the_data_plane_names_the_data_project(split_settings):
    loaded = load_sql("templates/cost_billing.sql", split_settings, "data")
    assert "`acme-data.data_ds.cost_daily`" in loaded
    assert "control-proj" not in loaded


def test_load_sql_on_the_control_plane_names_the_control_project(split_settings):
    loaded = load_sql("queries/runs_of_dag_run.sql", split_settings)
    assert "`control-proj.meta_ds.scheduled_pipeline_run_events`" in loaded
    assert "acme-data" not in loaded


def test_load_sql_refuses_a_file_that_names_the_other_planes_dataset(split_settings):
    with pytest.raises(ValueError, match="control plane"):
        load_sql("templates/cost_billing.sql", split_settings, "control")
    with pytest.raises(ValueError, match="data plane"):
        load_sql("queries/runs_of_dag_run.sql", split_settings, "data")


@pytest.mark.parametrize("relative_path", BIGQUERY_SQL)
def test_every_bigquery_sql_file_belongs_to_exactly_one_plane(relative_path, split_settings):
    planes = [plane for plane in ("control", "data") if _loads_on(relative_path, split_settings, plane)]
    data_plane = relative_path.startswith(("templates/", "data_schema/")) or relative_path in DATA_PLANE_QUERIES
    assert planes == ["data" if data_plane else "control"]


def test_load_sql_leaves_query_parameters_untouched(custom_settings):
    raw = (SQL_DIR / "templates" / "cost_billing.sql").read_text()
    loaded = load_sql("templates/cost_billing.sql", custom_settings, "data")
    params = re.findall(r"@\w+", raw)
    assert {"@customer_id", "@provider", "@run_date", "@lookback_days", "@currency", "@run_key"} <= set(params)
    assert re.findall(r"@\w+", loaded) == params


@pytest.mark.parametrize("relative_path", BIGQUERY_SQL)
def test_every_bigquery_sql_file_loads_with_no_placeholder_left_and_has_a_statement(relative_path, custom_settings):
    plane = "control" if _loads_on(relative_path, custom_settings, "control") else "data"
    loaded = load_sql(relative_path, custom_settings, plane)
    assert "${" not in loaded
    assert "$" not in loaded
    assert split_statements(loaded)


def test_every_template_names_an_existing_sql_file():
    for template in TEMPLATES.values():
        assert (SQL_DIR / template.sql_file).is_file(), template.name


def test_sql_files_lists_a_folder_in_apply_order():
    schema = sql_files("schema")
    assert schema == sorted(schema)
    assert schema[0] == "schema/010_customers.sql"
    assert all(f.startswith("schema/") and f.endswith(".sql") for f in schema)


def test_the_data_tables_have_their_own_schema_folder():
    assert sql_files("data_schema") == [
        "data_schema/100_billing_export.sql",
        "data_schema/110_cost_daily.sql",
        "data_schema/120_security.sql",
        "data_schema/130_security_audit_daily.sql",
        "data_schema/140_compliance.sql",
        "data_schema/150_compliance_daily.sql",
        "data_schema/160_observability_usage.sql",
        "data_schema/170_observability_daily.sql",
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bq_dataset", "x; DROP"),
        ("bq_dataset", "meta`.evil"),
        ("bq_dataset", ""),
        ("bq_data_dataset", "data ds"),
        ("bq_data_dataset", "${project}"),
        ("bq_project", "Demo_Project"),
        ("bq_project", "demo-project`; DROP"),
        ("bq_project", "1demo"),
    ],
)
def test_settings_reject_identifiers_that_are_not_bigquery_ids(tmp_path, field, value):
    with pytest.raises(ValidationError, match=field):
        Settings(state_dir=tmp_path, **{field: value})


def test_settings_accept_ordinary_identifiers(tmp_path):
    settings = Settings(state_dir=tmp_path, bq_project="my-proj-123", bq_dataset="_meta_1", bq_data_dataset="Data")
    assert (settings.bq_project, settings.bq_dataset, settings.bq_data_dataset) == ("my-proj-123", "_meta_1", "Data")


def test_settings_dataset_from_the_environment_is_validated_too(tmp_path, monkeypatch):
    monkeypatch.setenv("CP_BQ_DATASET", "x; DROP")
    with pytest.raises(ValidationError, match="bq_dataset"):
        Settings(state_dir=tmp_path)


# -- split_statements --------------------------------------------------------------------------------


def test_split_statements_splits_on_semicolons_at_line_ends():
    sql = "SELECT 1;\nSELECT\n  2\nFROM t;   \nSELECT 3"
    assert split_statements(sql) == ["SELECT 1", "SELECT\n  2\nFROM t", "SELECT 3"]


def test_split_statements_keeps_semicolons_inside_a_line():
    sql = "SELECT 'a;b' AS x, 1; -- trailing comment\nSELECT 2;"
    assert split_statements(sql) == ["SELECT 'a;b' AS x, 1; -- trailing comment\nSELECT 2"]


def test_split_statements_drops_comment_only_and_blank_chunks():
    sql = "-- header only;\n\n;\nSELECT 1;\n-- a comment\n  -- another\n\n"
    assert split_statements(sql) == ["SELECT 1"]


def test_split_statements_drops_whole_line_comments_that_could_name_parameters():
    sql = "-- merges @run_date into t\nMERGE t USING s ON TRUE\n  -- @other\nWHEN MATCHED THEN DELETE;\n"
    assert split_statements(sql) == ["MERGE t USING s ON TRUE\nWHEN MATCHED THEN DELETE"]


@pytest.mark.parametrize(
    ("sql_file", "plane", "tables"),
    [("queries/delete_customers.sql", "control", 3), ("queries/delete_customer_data.sql", "data", 4)],
)
def test_split_statements_of_the_delete_files_gives_one_statement_per_table(custom_settings, sql_file, plane, tables):
    statements = split_statements(load_sql(sql_file, custom_settings, plane))
    assert len(statements) == tables
    assert all(s.lstrip().splitlines()[-1].startswith("DELETE FROM") for s in statements)
    assert all(not s.endswith(";") for s in statements)


# -- _json_ready ----------------------------------------------------------------------------------


def test_json_ready_turns_dates_decimals_and_json_columns_into_json_values():
    row = {
        "at": datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        "day": date(2025, 1, 2),
        "cost": Decimal("12.30"),
        "details": {"b": 1, "a": [1, 2]},
        "n": 3,
        "flag": True,
        "none": None,
        "text": "x",
    }
    ready = _json_ready(row)
    assert ready == {
        "at": "2025-01-02T03:04:05+00:00",
        "day": "2025-01-02",
        "cost": "12.30",
        "details": '{"a": [1, 2], "b": 1}',
        "n": 3,
        "flag": True,
        "none": None,
        "text": "x",
    }
    assert _json_ready(row, json_as_text=False)["details"] == {"b": 1, "a": [1, 2]}
    assert row["cost"] == Decimal("12.30")  # the input is not changed


# -- the append-only version logs -------------------------------------------------------------------

VERSION_LOGS = ("customer_pipeline_configs", "customers")
"""Tables that take only appended versions (include/sql/README.md, "Append-only tables"): BigQuery
refuses UPDATE/DELETE/MERGE of rows still in the streaming buffer and runs few mutating DML
statements on a table at once, and the API streams rows into these and changes them seconds later."""
GDPR_DELETES = {"queries/delete_customers.sql", "queries/delete_customer_data.sql"}
"""Removing whole customers (every version) is the one mutation allowed."""
_MUTATION_OF_VERSION_LOG = re.compile(
    r"\b(?P<verb>UPDATE|MERGE(?:\s+INTO)?|DELETE(?:\s+FROM)?)\s+`?(?:[\w${}-]+\.)*(?P<table>"
    + "|".join(VERSION_LOGS)
    + r")(?![\w])",
    re.IGNORECASE,
)
CHECKED_SQL = sorted(
    str(p.relative_to(SQL_DIR)) for p in SQL_DIR.rglob("*.sql") if str(p.relative_to(SQL_DIR)) not in GDPR_DELETES
)


def _mutations_of_version_logs(sql: str) -> list[str]:
    return [m.group(0) for s in split_statements(sql) for m in _MUTATION_OF_VERSION_LOG.finditer(s)]


@pytest.mark.parametrize("relative_path", CHECKED_SQL)
def test_no_sql_file_updates_merges_into_or_deletes_from_a_version_log(relative_path):
    assert _mutations_of_version_logs((SQL_DIR / relative_path).read_text()) == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE `${project}.${dataset}.customer_pipeline_configs` SET is_active = FALSE WHERE TRUE",
        "update `p.d.customers` set status = 'X' where true",
        "MERGE `${project}.${dataset}.customers` AS t USING s ON FALSE WHEN NOT MATCHED THEN INSERT ROW",
        "MERGE INTO customer_pipeline_configs t USING s ON TRUE WHEN MATCHED THEN DELETE",
        "DELETE FROM `${project}.${dataset}.customer_pipeline_configs` WHERE TRUE",
        "DELETE customers WHERE TRUE",
    ],
)
def test_the_version_log_check_finds_updates_merges_and_deletes(statement):
    assert len(_mutations_of_version_logs(statement)) == 1


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO `${project}.${dataset}.customer_pipeline_configs` (config_id) SELECT config_id FROM x",
        "UPDATE `${project}.${dataset}.customer_subscriptions` SET valid_until = NULL WHERE TRUE",
        "SELECT * FROM `${project}.${dataset}.customers_current`",
        "-- UPDATE customers in a comment\nSELECT 1",
    ],
)
def test_the_version_log_check_lets_inserts_reads_and_other_tables_through(statement):
    assert _mutations_of_version_logs(statement) == []


def test_the_delete_files_remove_every_version_of_a_customer(custom_settings):
    # They filter by customer_id alone, so no version of a removed customer is left behind.
    statements = split_statements(load_sql("queries/delete_customers.sql", custom_settings))
    for table in VERSION_LOGS:
        [statement] = [s for s in statements if f".{table}`" in s]
        assert statement.rstrip().endswith("WHERE customer_id IN UNNEST(@customer_ids)")
