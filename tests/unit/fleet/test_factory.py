"""fleet/factory.py: snapshot rows -> one Airflow DAG per valid config; bad rows -> ConfigErrors."""

from __future__ import annotations

import runpy
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG
from airflow.timetables.base import DataInterval, TimeRestriction
from airflow.timetables.trigger import CronTriggerTimetable

from customer_pipelines.fleet import factory
from customer_pipelines.fleet.shards import MAX_SHARDS
from customer_pipelines.models import ConfigError, Customer, PipelineConfig, parse_config
from customer_pipelines.settings import get_settings
from customer_pipelines.snapshot import Snapshot
from tests_support import FLEET_DIR, run_fleet_files

REPO_ROOT = Path(__file__).resolve().parents[3]
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


def test_the_dag_timetable_carries_the_snapshot_anchor_and_none_when_the_config_must_not_run(settings):
    anchor = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
    customer = Customer(customer_id="cust_a", status="ACTIVE")
    assert factory.build_dag(_config(), customer, settings, runnable_since=anchor).timetable.runnable_since == anchor
    assert factory.build_dag(_config(), customer, settings).timetable.runnable_since is None


# -- cron aliases: the DAG's timetable, across DST -----------------------------------------------


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# US: 2026-03-08 02:00 EST -> 03:00 EDT, 2026-11-01 02:00 EDT -> 01:00 EST (New York: UTC-5 / UTC-4).
# EU: 2026-03-29 02:00 CET -> 03:00 CEST, 2026-10-25 03:00 CEST -> 02:00 CET (Berlin: UTC+1 / UTC+2).
ALIAS_TICKS = [
    # (cron, timezone, after, the next ticks in UTC)
    (
        "@daily",
        "America/New_York",
        _utc(2026, 3, 6, 12),
        [_utc(2026, 3, 7, 5), _utc(2026, 3, 8, 5), _utc(2026, 3, 9, 4)],
    ),
    (
        "@daily",
        "America/New_York",
        _utc(2026, 10, 30, 12),
        [_utc(2026, 10, 31, 4), _utc(2026, 11, 1, 4), _utc(2026, 11, 2, 5)],
    ),
    (
        "@midnight",
        "Europe/Berlin",
        _utc(2026, 3, 27, 12),
        [_utc(2026, 3, 27, 23), _utc(2026, 3, 28, 23), _utc(2026, 3, 29, 22)],
    ),
    (
        "@midnight",
        "Europe/Berlin",
        _utc(2026, 10, 23, 12),
        [_utc(2026, 10, 23, 22), _utc(2026, 10, 24, 22), _utc(2026, 10, 25, 23)],
    ),
    # Sundays 00:00: 2026-03-08, -03-29, -10-25 and -11-01 are Sundays.
    ("@weekly", "America/New_York", _utc(2026, 3, 1, 12), [_utc(2026, 3, 8, 5), _utc(2026, 3, 15, 4)]),
    ("@weekly", "America/New_York", _utc(2026, 10, 25, 12), [_utc(2026, 11, 1, 4), _utc(2026, 11, 8, 5)]),
    ("@weekly", "Europe/Berlin", _utc(2026, 3, 22, 12), [_utc(2026, 3, 28, 23), _utc(2026, 4, 4, 22)]),
    ("@weekly", "Europe/Berlin", _utc(2026, 10, 18, 12), [_utc(2026, 10, 24, 22), _utc(2026, 10, 31, 23)]),
    ("@monthly", "America/New_York", _utc(2026, 2, 15), [_utc(2026, 3, 1, 5), _utc(2026, 4, 1, 4)]),
    (
        "@monthly",
        "America/New_York",
        _utc(2026, 9, 15),
        [_utc(2026, 10, 1, 4), _utc(2026, 11, 1, 4), _utc(2026, 12, 1, 5)],
    ),
    ("@monthly", "Europe/Berlin", _utc(2026, 2, 15), [_utc(2026, 2, 28, 23), _utc(2026, 3, 31, 22)]),
    ("@monthly", "Europe/Berlin", _utc(2026, 9, 15), [_utc(2026, 9, 30, 22), _utc(2026, 10, 31, 23)]),
    ("@yearly", "America/New_York", _utc(2025, 6, 1), [_utc(2026, 1, 1, 5), _utc(2027, 1, 1, 5)]),
    ("@annually", "Europe/Berlin", _utc(2025, 6, 1), [_utc(2025, 12, 31, 23), _utc(2026, 12, 31, 23)]),
    # Hourly: every real hour, also through the skipped hour (spring) and the repeated one (autumn).
    (
        "@hourly",
        "America/New_York",
        _utc(2026, 3, 8, 5, 30),
        [_utc(2026, 3, 8, 6), _utc(2026, 3, 8, 7), _utc(2026, 3, 8, 8)],
    ),
    (
        "@hourly",
        "America/New_York",
        _utc(2026, 11, 1, 4, 30),
        [_utc(2026, 11, 1, 5), _utc(2026, 11, 1, 6), _utc(2026, 11, 1, 7)],
    ),
    ("@hourly", "Europe/Berlin", _utc(2026, 3, 29, 0, 30), [_utc(2026, 3, 29, 1), _utc(2026, 3, 29, 2)]),
    (
        "@hourly",
        "Europe/Berlin",
        _utc(2026, 10, 25, 0, 30),
        [_utc(2026, 10, 25, 1), _utc(2026, 10, 25, 2), _utc(2026, 10, 25, 3)],
    ),
]


def _ticks_after(dag: DAG, after: datetime, count: int) -> list[datetime]:
    """The DAG's next ticks as the scheduler asks for them once the DAG has run: after the last one."""
    ticks, last = [], pendulum.instance(after)  # the scheduler hands the timetable pendulum datetimes
    for _ in range(count):
        info = dag.timetable.next_dagrun_info(
            last_automated_data_interval=DataInterval(last, last),
            restriction=TimeRestriction(earliest=None, latest=None, catchup=True),
        )
        assert info is not None
        ticks.append(info.run_after)
        last = info.run_after
    return ticks


@pytest.mark.parametrize(
    ("cron", "timezone", "after", "expected"),
    [pytest.param(*case, id=f"{case[0]}-{case[1]}-{case[2]:%Y-%m-%d}") for case in ALIAS_TICKS],
)
def test_a_cron_alias_ticks_at_local_wall_time_across_dst(settings, cron, timezone, after, expected):
    dag = factory.build_dag(
        _config(schedule_cron=cron, timezone=timezone),
        Customer(customer_id="cust_a", status="ACTIVE"),
        settings,
        runnable_since=after - timedelta(days=1),
    )
    assert isinstance(dag.timetable, CronTriggerTimetable)
    assert _ticks_after(dag, after, len(expected)) == expected


def test_an_alias_dag_shows_airflows_description_of_the_schedule(settings):
    dag = factory.build_dag(
        _config(schedule_cron="@annually"), Customer(customer_id="cust_a", status="ACTIVE"), settings
    )
    assert dag.timetable.summary == "0 0 1 1 *"
    assert dag.timetable.description.startswith("At 00:00")
    assert "` @yearly `" in dag.doc_md


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


def test_a_newer_row_reusing_a_customers_config_id_is_rejected_and_the_older_keeps_its_dag(
    write_snap, demo_customers, demo_configs, settings, demo_dag_ids
):
    original = {**demo_configs[0], "created_at": "2026-01-01T00:00:00+00:00"}
    twin = {**original, "schedule_cron": "0 5 * * *", "created_at": "2026-06-01T00:00:00+00:00"}
    result = _build(write_snap(demo_customers, [twin, original, *demo_configs[1:]]), settings)
    assert set(result.dags) == demo_dag_ids
    assert (
        result.dags[f"{original['customer_id']}.{original['config_id']}"].timetable.summary == original["schedule_cron"]
    )
    [error] = result.errors
    assert (error.customer_id, error.config_id) == (original["customer_id"], original["config_id"])
    assert "duplicate of an older config of this customer" in error.reason


def test_rows_of_one_customer_with_one_config_id_and_no_order_are_all_rejected(
    write_snap, demo_customers, demo_configs, settings, demo_dag_ids
):
    twin = {**demo_configs[0], "schedule_cron": "0 5 * * *"}  # the same created_at: which is the real one?
    result = _build(write_snap(demo_customers, [*demo_configs, twin]), settings)
    assert set(result.dags) == demo_dag_ids - {f"{twin['customer_id']}.{twin['config_id']}"}
    assert [(e.customer_id, e.config_id) for e in result.errors] == [(twin["customer_id"], twin["config_id"])]


def test_another_customer_reusing_a_config_id_removes_nothing_and_gets_its_own_dag(
    write_snap, demo_customers, demo_configs, settings, demo_dag_ids
):
    victim = demo_configs[0]
    other = next(c for c in demo_customers if c["customer_id"] != victim["customer_id"])
    clash = {**victim, "customer_id": other["customer_id"], "schedule_cron": "0 5 * * *"}
    result = _build(write_snap(demo_customers, [*demo_configs, clash]), settings)
    assert result.errors == []
    assert set(result.dags) == demo_dag_ids | {f"{other['customer_id']}.{victim['config_id']}"}
    assert result.dags[f"{victim['customer_id']}.{victim['config_id']}"].timetable.summary == victim["schedule_cron"]


def _hostile_rows(template: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows whose ids and values hold a newline, a tab, ANSI escapes and 1 MB of text, and a config
    id two rows share (reported as a duplicate)."""
    return [
        {**template, "config_id": "cfg\nline2", "customer_id": "cust\tx\x1b[31m"},
        {**template, "config_id": "cfg_tz", "timezone": "UTC\n- config fake: looks like another row"},
        {**template, "config_id": "cfg_tpl", "pipeline_template": "\x1b[2J" + "t" * 1_000_000},
        {**template, "config_id": "cfg_params", "parameters": {"key\nx": 1}},
        {**template, "config_id": "twin\r\nid"},
        {**template, "config_id": "twin\r\nid", "schedule_cron": "0 5 * * *"},
    ]


def test_raise_config_errors_prints_each_hostile_row_as_one_escaped_line(
    write_snap, demo_customers, demo_configs, settings
):
    path = write_snap(demo_customers, [*demo_configs, *_hostile_rows(demo_configs[0])])
    with pytest.raises(factory.InvalidPipelineConfigs) as raised:
        factory.raise_config_errors(snapshot_path=path, settings=settings)
    header, *lines = str(raised.value).split("\n")
    assert header.startswith("5 customer pipeline problem(s)")
    assert len(lines) == 5, lines
    assert all(line.startswith("- config ") and line.isprintable() and len(line) < 2_000 for line in lines), lines
    assert (
        "- config 'twin\\r\\nid' (customer cust_acme_001): config_id: duplicate of an older config of this "
        "customer; this row is ignored" in lines
    )


def test_load_fleet_logs_each_hostile_row_on_one_line(write_snap, demo_customers, demo_configs, settings, caplog):
    path = write_snap(demo_customers, [*demo_configs, *_hostile_rows(demo_configs[0])])
    with caplog.at_level("WARNING", logger="customer_pipelines.fleet.factory"):
        result = factory.load_fleet(snapshot_path=path, settings=settings)
    assert len(result.errors) == 5
    messages = [r.getMessage() for r in caplog.records if "invalid pipeline config" in r.getMessage()]
    assert len(messages) == 5
    assert all(m.isprintable() and len(m) < 2_000 for m in messages), messages


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


def test_the_dags_folder_holds_the_errors_file_and_every_shard_file_alike():
    assert "customer_pipelines_config_errors.py" in {p.name for p in DAG_FILES}
    shard_files = sorted(FLEET_DIR.glob("*.py"), key=lambda p: (len(p.name), p.name))
    assert [p.name for p in shard_files] == [f"shard_{i:02d}.py" for i in range(MAX_SHARDS)]
    assert len({p.read_text() for p in shard_files}) == 1, "a shard file's name alone says which configs it builds"


@pytest.mark.parametrize("dag_file", DAG_FILES, ids=[p.stem for p in DAG_FILES])
def test_dag_file_imports_cleanly_against_the_demo_snapshot(dag_file, dag_file_env, demo_snapshot_path):
    dag_file_env(demo_snapshot_path)
    runpy.run_path(str(dag_file), run_name=f"unit_test_{dag_file.stem}")


def test_the_shard_files_together_define_the_four_demo_dags(dag_file_env, demo_snapshot_path, demo_dag_ids):
    dag_file_env(demo_snapshot_path)
    dags = run_fleet_files()
    assert set(dags) == demo_dag_ids
    assert all(dag.dag_id == name for name, dag in dags.items())


def test_the_shard_files_without_a_snapshot_define_no_dag_and_do_not_raise(dag_file_env, tmp_path):
    dag_file_env(tmp_path / "missing" / "configs.sqlite")
    assert not run_fleet_files()


def test_errors_dag_file_raises_listing_the_bad_configs(dag_file_env, snapshot_with_every_bad_row):
    dag_file_env(snapshot_with_every_bad_row)
    with pytest.raises(factory.InvalidPipelineConfigs, match=f"{len(BAD_ROWS)} customer pipeline problem"):
        runpy.run_path(str(REPO_ROOT / "dags" / "customer_pipelines_config_errors.py"), run_name="unit_test_errors")


# -- settings at parse time -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value"),
    [("CP_BQ_PROJECT", "Bad_Project"), ("CP_SYNC_INTERVAL_SECONDS", "1"), ("CP_MAX_RETRY_DELAY_MINUTES", "0")],
)
def test_a_bad_setting_never_hides_the_dags_and_is_one_clear_import_error(
    monkeypatch, tmp_path, demo_customers, demo_configs, demo_dag_ids, variable, value
):
    from customer_pipelines.snapshot import write_snapshot

    monkeypatch.setenv("CP_STATE_DIR", str(tmp_path))
    write_snapshot(tmp_path / "snapshot" / "configs.sqlite", demo_customers, demo_configs, source="test")
    monkeypatch.setenv(variable, value)
    assert demo_dag_ids <= set(run_fleet_files())
    with pytest.raises(factory.InvalidPipelineConfigs) as raised:
        runpy.run_path(str(REPO_ROOT / "dags" / "customer_pipelines_config_errors.py"))
    problems = [line for line in str(raised.value).splitlines() if line.startswith("- ")]
    assert problems == [f"- setting {variable}: {problems[0].split(': ', 1)[1]}"]
    assert len(problems[0]) < 200


# -- docs operators read: customer-supplied values are inert ---------------------------------------

HOSTILE_NAME = (
    "Acme ![t](https://evil.example/pixel.png) [re-login here](https://evil.example/login) <img src=x> "
    "<b>bold</b> &amp; `code` ``two`` \n| customer | cust_globex_001 |\n| active | False |\n<!--"
)


def _rendered_tokens(markdown: str) -> list[Any]:
    from markdown_it import MarkdownIt

    return list(MarkdownIt("commonmark").enable("table").parse(markdown))


def _walk(tokens: list[Any]) -> list[Any]:
    out = []
    for token in tokens:
        out.append(token)
        out += _walk(token.children or [])
    return out


def test_doc_md_of_hostile_names_renders_no_image_link_or_html_and_keeps_the_real_config_table(settings):
    config = _config(display_name=HOSTILE_NAME[:200], parameters={"currency": "EUR"})
    customer = Customer(
        customer_id="cust_a", company_name=HOSTILE_NAME, status="ACTIVE", plan="STARTER", max_concurrent_runs=2
    )
    doc = factory.build_dag(config, customer, settings).doc_md
    tokens = _walk(_rendered_tokens(doc))
    kinds = {t.type for t in tokens}
    assert not kinds & {"image", "html_block", "html_inline"}, kinds
    # The only links are the doc's own, to the customer's pages (its id is a validated slug).
    assert [t.attrs["href"] for t in tokens if t.type == "link_open"] == [
        "/customer-pipelines/fleet/customers/cust_a",
        "/dags?tags=customer%3Acust_a",
        "/dag_runs?dag_id_pattern=cust_a.",
    ]
    assert [t.type for t in tokens if t.type == "table_open"] == ["table_open"]
    rows = []
    for index, token in enumerate(tokens):
        if token.type == "tr_open":
            cells = []
            for cell in tokens[index + 1 :]:
                if cell.type == "tr_close":
                    break
                if cell.type == "inline":
                    cells.append(cell.content)
            rows.append(cells)
    labels = [cells[0] for cells in rows[1:]]
    assert labels == [
        "config", "provider / domain", "template", "schedule", "priority", "retries", "max duration", "SLA",
        "missed ticks run after an outage", "parameters", "active",
    ]  # fmt: skip
    assert rows[-1] == ["active", "True"]
    assert "\n" not in doc.splitlines()[0] and len(doc.splitlines()) == 19


@pytest.mark.parametrize("in_table", [True, False])
def test_md_code_shortcut_for_plain_values_renders_exactly_what_the_full_rewrite_does(in_table):
    values = [
        "cust_a", "daily_sales", "30 2 * * *", "America/New_York", "  padded  ", "", "   ", "Ünïcödé ✓",
        "a|b", "tick`s", "``", "line\nbreak", "tab\there", "\x1b[31mred", "sep\u2028x", "para\u2029x",
        "nbsp\u00a0x", "zero\u200bwidth", "x" * 200, "x" * 201, " " + "y" * 199 + " ", 42, None, 2.5,
        HOSTILE_NAME, HOSTILE_NAME[:200],
    ]  # fmt: skip
    for value in values:
        expected = factory._md_code_rewritten(str(value), in_table=in_table)
        assert factory.md_code(value, in_table=in_table) == expected, repr(value)
    # and the shortcut is taken for the common case: an ordinary id is one span, nothing rewritten
    assert factory.md_code("cust_a") == "` cust_a `"


def test_the_cyclic_collector_is_paused_while_dags_are_built_and_runs_again_after_even_a_failed_build(
    monkeypatch, demo_snapshot_path, settings
):
    import gc

    real_build = factory.build_dags
    enabled_during: list[bool] = []

    def build_and_look(*args: Any, **kwargs: Any) -> factory.FactoryResult:
        enabled_during.append(gc.isenabled())
        return real_build(*args, **kwargs)

    monkeypatch.setattr(factory, "build_dags", build_and_look)
    result = factory.load_fleet(snapshot_path=demo_snapshot_path, settings=settings)
    assert result.dags and enabled_during == [False]
    assert gc.isenabled(), "the collector runs again once the file's DAGs are built"

    def failing_build(*args: Any, **kwargs: Any) -> factory.FactoryResult:
        raise RuntimeError("a bug in the build")

    monkeypatch.setattr(factory, "build_dags", failing_build)
    result = factory.load_fleet(snapshot_path=demo_snapshot_path, settings=settings)
    assert result.snapshot_error == "factory failed: a bug in the build"
    assert gc.isenabled(), "a failed build never leaves the collector off"

    gc.disable()  # a caller that runs without the collector keeps it off
    try:
        monkeypatch.setattr(factory, "build_dags", real_build)
        assert factory.load_fleet(snapshot_path=demo_snapshot_path, settings=settings).dags
        assert not gc.isenabled()
    finally:
        gc.enable()
