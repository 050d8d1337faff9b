"""factory.py: snapshot rows -> one Airflow DAG per valid config; bad rows -> ConfigErrors."""

from __future__ import annotations

import runpy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import DAG
from airflow.timetables.base import DataInterval, TimeRestriction
from airflow.timetables.trigger import CronTriggerTimetable

from customer_pipelines import factory
from customer_pipelines.models import ConfigError, Customer, PipelineConfig, parse_config
from customer_pipelines.settings import get_settings
from customer_pipelines.snapshot import Snapshot

REPO_ROOT = Path(__file__).resolve().parents[2]
DAG_FILES = sorted((REPO_ROOT / "dags").glob("*.py"))
PLAN_BONUS = {"STARTER": 0, "PROFESSIONAL": 1, "SCALE": 2, "ENTERPRISE": 3}


def _build(path: Path, settings: Any, **kwargs: Any) -> factory.FactoryResult:
    with Snapshot(path) as snapshot:
        return factory.build_dags(snapshot, settings, **kwargs)


# -- DAG integrity against the demo snapshot ------------------------------------------------------


def test_demo_snapshot_builds_exactly_the_four_demo_dags_without_errors(demo_snapshot_path, settings, demo_dag_ids):
    result = _build(demo_snapshot_path, settings)
    assert result.errors == []
    assert result.snapshot_error is None
    assert set(result.dags) == demo_dag_ids
    assert all(isinstance(dag, DAG) and dag.dag_id == dag_id for dag_id, dag in result.dags.items())


@pytest.mark.parametrize(
    "dag_id",
    [
        "cust_acme_001.acme_gcp_cost_daily",
        "cust_acme_001.acme_gcp_security_weekly",
        "cust_globex_001.globex_aws_cost_daily",
        "cust_globex_001.globex_azure_compliance_monthly",
    ],
)
def test_demo_dag_carries_its_configs_schedule_pool_priority_retries_tags_and_doc(
    dag_id, demo_snapshot_path, settings, demo_configs, demo_customers
):
    config = next(c for c in demo_configs if f"{c['customer_id']}.{c['config_id']}" == dag_id)
    customer = next(c for c in demo_customers if c["customer_id"] == config["customer_id"])
    dag = _build(demo_snapshot_path, settings).dags[dag_id]

    timetable = dag.timetable
    assert isinstance(timetable, CronTriggerTimetable)
    assert timetable.summary == config["schedule_cron"]
    assert timetable._expression == config["schedule_cron"]
    assert timetable._timezone.name == config["timezone"]
    assert dag.catchup is False
    assert dag.start_date is None, "a start_date would let the first deploy fire a past tick"
    assert dag.max_active_runs == 1
    assert dag.is_paused_upon_creation is False

    task = dag.get_task(factory.TASK_ID)
    assert task.start_date is None
    assert task.pool == f"cp_{config['customer_id']}"
    assert task.weight_rule == "absolute"
    assert task.priority_weight == config["priority"] * 10 + PLAN_BONUS[customer["plan"]]
    assert task.retries == config["retry_config"]["max_attempts"] - 1
    assert task.execution_timeout == timedelta(minutes=config["max_execution_duration_minutes"])
    assert task.config_id == config["config_id"]
    assert task.customer_id == config["customer_id"]
    assert task.parameters == config["parameters"]

    assert {
        f"customer:{config['customer_id']}",
        f"provider:{config['provider']}",
        f"domain:{config['domain']}",
        f"template:{config['pipeline_template']}",
    } <= set(dag.tags)
    assert customer["company_name"] in dag.doc_md
    assert config["schedule_cron"] in dag.doc_md


def test_demo_priority_weights_follow_priority_then_plan(demo_snapshot_path, settings):
    weights = {
        dag_id: dag.get_task(factory.TASK_ID).priority_weight
        for dag_id, dag in _build(demo_snapshot_path, settings).dags.items()
    }
    assert weights == {
        "cust_acme_001.acme_gcp_cost_daily": 71,  # priority 7, PROFESSIONAL
        "cust_acme_001.acme_gcp_security_weekly": 51,  # priority 5, PROFESSIONAL
        "cust_globex_001.globex_aws_cost_daily": 62,  # priority 6, SCALE
        "cust_globex_001.globex_azure_compliance_monthly": 42,  # priority 4, SCALE
    }


def _config(**overrides: Any) -> PipelineConfig:
    row = {
        "config_id": "cfg",
        "customer_id": "cust_a",
        "provider": "GCP",
        "domain": "COST",
        "pipeline_template": "cost_billing",
        "schedule_cron": "*/30 * * * *",
        **overrides,
    }
    parsed = parse_config(row)
    assert isinstance(parsed, PipelineConfig), parsed
    return parsed


def test_a_larger_plan_never_outranks_a_higher_priority():
    starter = Customer(customer_id="cust_a", status="ACTIVE", plan="STARTER", max_concurrent_runs=2)
    enterprise = Customer(customer_id="cust_a", status="ACTIVE", plan="ENTERPRISE", max_concurrent_runs=25)
    for priority in range(1, 10):
        low_big = factory.priority_weight_for(_config(priority=priority), enterprise)
        high_small = factory.priority_weight_for(_config(priority=priority + 1), starter)
        assert high_small > low_big
    assert factory.priority_weight_for(_config(priority=5), None) == 50


@pytest.mark.parametrize(
    ("config_active", "status", "plan", "paused"),
    [
        (True, "ACTIVE", "STARTER", False),
        (False, "ACTIVE", "STARTER", True),
        (True, "SUSPENDED", "STARTER", True),
        (True, "CHURNED", "STARTER", True),
        (True, "ACTIVE", None, True),  # no subscription in force
    ],
)
def test_dag_is_paused_on_creation_unless_config_customer_and_subscription_are_in_force(
    settings, config_active, status, plan, paused
):
    customer = Customer(customer_id="cust_a", status=status, plan=plan, max_concurrent_runs=2 if plan else None)
    dag = factory.build_dag(_config(is_active=config_active), customer, settings)
    assert dag.is_paused_upon_creation is paused


def test_a_new_dag_waits_for_its_next_tick_instead_of_firing_a_past_one(settings):
    dag = factory.build_dag(_config(), Customer(customer_id="cust_a", status="ACTIVE"), settings)
    before = datetime.now(UTC)
    first = dag.timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=None, latest=None, catchup=False)
    )
    assert first is not None
    assert before < first.run_after <= before + timedelta(minutes=30, seconds=5)
    # Once the DAG has run, the next tick follows the last one (Airflow's own behaviour).
    last = DataInterval(first.run_after - timedelta(minutes=30), first.run_after)
    following = dag.timetable.next_dagrun_info(
        last_automated_data_interval=last, restriction=TimeRestriction(earliest=None, latest=None, catchup=False)
    )
    assert following is not None
    assert following.run_after == first.run_after + timedelta(minutes=30)


def test_a_new_dag_respects_a_future_earliest_restriction(settings):
    dag = factory.build_dag(
        _config(schedule_cron="0 2 * * *"), Customer(customer_id="cust_a", status="ACTIVE"), settings
    )
    earliest = datetime(2099, 1, 1, 5, 0, tzinfo=UTC)
    info = dag.timetable.next_dagrun_info(
        last_automated_data_interval=None, restriction=TimeRestriction(earliest=earliest, latest=None, catchup=False)
    )
    assert info is not None
    assert info.run_after == datetime(2099, 1, 2, 2, 0, tzinfo=UTC)


# -- malformed rows -------------------------------------------------------------------------------

_MISSING = object()

BAD_ROWS = [
    # (id, overrides, field the reason must name)
    ("cron-minute-61", {"schedule_cron": "61 * * * *"}, "schedule_cron"),
    ("cron-not-a-cron", {"schedule_cron": "not a cron"}, "schedule_cron"),
    ("cron-six-fields", {"schedule_cron": "0 0 * * * *"}, "schedule_cron"),
    ("timezone-unknown", {"timezone": "Mars/Olympus"}, "timezone"),
    ("template-unknown", {"pipeline_template": "crypto_mining"}, "pipeline_template"),
    ("template-domain-mismatch", {"pipeline_template": "security_audit", "domain": "COST"}, "pipeline_template"),
    ("priority-0", {"priority": 0}, "priority"),
    ("priority-11", {"priority": 11}, "priority"),
    ("config-id-sql", {"config_id": "x'; DROP TABLE customers;--"}, "config_id"),
    ("config-id-300-chars", {"config_id": "a" * 300}, "config_id"),
    ("config-id-traversal", {"config_id": "../etc"}, "config_id"),
    ("customer-id-dot", {"customer_id": "cust.acme_001"}, "customer_id"),
    ("customer-id-uppercase", {"customer_id": "CUST_ACME_001"}, "customer_id"),
    ("parameters-out-of-range", {"parameters": {"lookback_days": 99}}, "parameters"),
    ("parameters-unknown-key", {"parameters": {"surprise": True}}, "parameters"),
    ("provider-missing", {"provider": _MISSING}, "provider"),
    ("customer-missing", {"customer_id": "cust_nobody_001"}, "customer_id"),
]


def _bad_row(template: dict[str, Any], overrides: dict[str, Any], config_id: str) -> dict[str, Any]:
    row = {**template, "config_id": config_id}
    for key, value in overrides.items():
        if value is _MISSING:
            row.pop(key)
        else:
            row[key] = value
    return row


@pytest.mark.parametrize(("overrides", "field"), [pytest.param(o, f, id=i) for i, o, f in BAD_ROWS])
def test_bad_row_becomes_one_config_error_naming_the_field_and_the_demo_dags_still_build(
    overrides, field, write_snap, demo_customers, demo_configs, settings, demo_dag_ids
):
    bad = _bad_row(demo_configs[0], overrides, "bad_row")
    result = _build(write_snap(demo_customers, [*demo_configs, bad]), settings)

    assert set(result.dags) == demo_dag_ids
    assert len(result.errors) == 1, result.errors
    error = result.errors[0]
    assert isinstance(error, ConfigError)
    assert field in error.reason, error.reason
    assert bad["config_id"][:20] in error.config_id


@pytest.fixture
def snapshot_with_every_bad_row(write_snap, demo_customers, demo_configs):
    bad = [_bad_row(demo_configs[0], o, f"bad_{n:02d}") for n, (_, o, _) in enumerate(BAD_ROWS)]
    return write_snap(demo_customers, [*demo_configs, *bad])


def test_raise_config_errors_lists_every_bad_config(snapshot_with_every_bad_row, settings):
    expected = [str(e) for e in _build(snapshot_with_every_bad_row, settings).errors]
    assert len(expected) == len(BAD_ROWS)

    with pytest.raises(factory.InvalidPipelineConfigs) as raised:
        factory.raise_config_errors(snapshot_path=snapshot_with_every_bad_row, settings=settings)
    message = str(raised.value)
    assert message.startswith(f"{len(BAD_ROWS)} customer pipeline problem(s)")
    for line in expected:
        assert f"- {line}" in message


def test_raise_config_errors_is_silent_on_the_clean_demo_snapshot(demo_snapshot_path, settings):
    factory.raise_config_errors(snapshot_path=demo_snapshot_path, settings=settings)


def test_raise_config_errors_reports_a_missing_snapshot(tmp_path, settings):
    with pytest.raises(factory.InvalidPipelineConfigs, match="no readable config snapshot"):
        factory.raise_config_errors(snapshot_path=tmp_path / "absent.sqlite", settings=settings)


def test_a_cron_that_never_fires_is_a_config_error(write_snap, demo_customers, demo_configs, settings, demo_dag_ids):
    bad = _bad_row(demo_configs[0], {"schedule_cron": "0 0 31 2 *"}, "bad_row")
    result = _build(write_snap(demo_customers, [*demo_configs, bad]), settings)
    assert set(result.dags) == demo_dag_ids
    assert [e.config_id for e in result.errors] == ["bad_row"]
    assert "schedule_cron" in result.errors[0].reason


def test_two_rows_with_one_config_id_are_reported_as_duplicate(write_snap, demo_customers, demo_configs, settings):
    twin = {**demo_configs[0], "schedule_cron": "0 5 * * *"}
    result = _build(write_snap(demo_customers, [*demo_configs, twin]), settings)
    assert any("duplicate" in e.reason for e in result.errors), result.errors


# -- sharding and the parsing context --------------------------------------------------------------


def test_sharded_builds_together_give_the_fleet_once(write_snap, fleet_snapshot_rows, settings):
    customers, configs = fleet_snapshot_rows
    path = write_snap(customers, configs)
    whole = _build(path, settings)
    assert whole.errors == []
    assert len(whole.dags) == len(configs)
    seen: list[str] = []
    for shard in range(3):
        seen += list(_build(path, settings, shard=shard, shards=3).dags)
    assert sorted(seen) == sorted(whole.dags)


def test_parsing_context_builds_only_the_dag_of_the_task(monkeypatch, demo_snapshot_path, settings):
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "cust_acme_001.acme_gcp_cost_daily")
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_TASK_ID", factory.TASK_ID)
    result = factory.load_fleet(snapshot_path=demo_snapshot_path, settings=settings)
    assert result.snapshot_error is None
    assert result.errors == []
    assert list(result.dags) == ["cust_acme_001.acme_gcp_cost_daily"]
    dag = result.dags["cust_acme_001.acme_gcp_cost_daily"]
    # Built from the same row as a full parse: the customer is looked up one by one.
    assert dag.get_task(factory.TASK_ID).priority_weight == 71
    assert "Acme Test Corp" in dag.doc_md


def test_parsing_context_of_an_unknown_dag_builds_nothing(monkeypatch, demo_snapshot_path, settings):
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "cust_acme_001.no_such_config")
    result = factory.load_fleet(snapshot_path=demo_snapshot_path, settings=settings)
    assert result.dags == {}
    assert result.errors == []


def test_raise_config_errors_skips_its_report_under_a_parsing_context(
    monkeypatch, snapshot_with_every_bad_row, settings
):
    monkeypatch.setenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", "cust_acme_001.acme_gcp_cost_daily")
    factory.raise_config_errors(snapshot_path=snapshot_with_every_bad_row, settings=settings)


# -- the DAG files ---------------------------------------------------------------------------------


@pytest.fixture
def dag_file_env(monkeypatch, tmp_path):
    def use(snapshot_path: Path) -> None:
        monkeypatch.setenv("CP_SNAPSHOT_PATH", str(snapshot_path))
        monkeypatch.setenv("CP_STATE_DIR", str(tmp_path / "state"))
        get_settings.cache_clear()

    return use


def test_the_dags_folder_holds_the_fleet_and_the_errors_files():
    assert {"customer_pipelines_config_errors.py", "customer_pipelines_fleet.py"} <= {p.name for p in DAG_FILES}


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[p.stem for p in DAG_FILES])
def test_dag_file_imports_cleanly_against_the_demo_snapshot(dag_file, dag_file_env, demo_snapshot_path):
    dag_file_env(demo_snapshot_path)
    runpy.run_path(str(dag_file), run_name=f"unit_test_{dag_file.stem}")


def test_fleet_dag_file_defines_the_four_demo_dags(dag_file_env, demo_snapshot_path, demo_dag_ids):
    dag_file_env(demo_snapshot_path)
    namespace = runpy.run_path(str(REPO_ROOT / "dags" / "customer_pipelines_fleet.py"), run_name="unit_test_fleet")
    dags = {name: value for name, value in namespace.items() if isinstance(value, DAG)}
    assert set(dags) == demo_dag_ids
    assert all(dag.dag_id == name for name, dag in dags.items())


def test_fleet_dag_file_without_a_snapshot_defines_no_dag_and_does_not_raise(dag_file_env, tmp_path):
    dag_file_env(tmp_path / "missing" / "configs.sqlite")
    namespace = runpy.run_path(str(REPO_ROOT / "dags" / "customer_pipelines_fleet.py"), run_name="unit_test_fleet")
    assert not [v for v in namespace.values() if isinstance(v, DAG)]


def test_errors_dag_file_raises_listing_the_bad_configs(dag_file_env, snapshot_with_every_bad_row):
    dag_file_env(snapshot_with_every_bad_row)
    with pytest.raises(factory.InvalidPipelineConfigs, match=f"{len(BAD_ROWS)} customer pipeline problem"):
        runpy.run_path(str(REPO_ROOT / "dags" / "customer_pipelines_config_errors.py"), run_name="unit_test_errors")
