"""The BigQuery store against the emulator: schema, config round trip, mirror through the views,
and a template's real work."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.cloud import bigquery

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.models import PipelineConfig, parse_config
from customer_pipelines.runs.mirror import RunIdentity, RunState, RunStateMirror, SkipReason, run_event
from customer_pipelines.seed import demo_dataset, load_dataset
from customer_pipelines.snapshot import Snapshot, refresh_snapshot

pytestmark = pytest.mark.integration


def _tables(store) -> set[str]:
    dataset = f"{store.settings.bq_project}.{store.settings.bq_dataset}"
    return {t.table_id for t in store.client.list_tables(dataset)}


def test_schema_applied_twice_changes_nothing(store):
    load_dataset(store, demo_dataset())
    tables_before = _tables(store)
    customers_before = store.fetch_customers()

    store.apply_schema()

    assert _tables(store) == tables_before
    assert store.fetch_customers() == customers_before
    assert {
        "customers",
        "customer_subscriptions",
        "customer_usage",
        "customer_api_keys",
        "customer_pipeline_configs",
        "scheduled_pipeline_runs",
        "pipeline_schedule_audit",
        "pipeline_runs_current",
        "sla_breaches",
        "pipelines_due_soon",
        "pipeline_execution_stats_7d",
        "currently_running_pipelines",
    } <= tables_before


def test_configs_round_trip_from_bigquery_through_the_snapshot(store, tmp_path):
    demo = demo_dataset()
    load_dataset(store, demo)

    result = refresh_snapshot(store, tmp_path / "configs.sqlite")

    assert result.invalid == []
    with Snapshot(tmp_path / "configs.sqlite") as snapshot:
        read_back = {row.config_id: parse_config(row.row) for row in snapshot.configs()}
        assert snapshot.customer("cust_acme_001").daily_run_limit == 25
        assert snapshot.customer("cust_globex_001").monthly_run_limit == 3000
    for seeded in demo.configs:
        config = read_back[seeded["config_id"]]
        assert isinstance(config, PipelineConfig)
        assert (config.schedule_cron, config.timezone, config.priority) == (
            seeded["schedule_cron"],
            seeded["timezone"],
            seeded["priority"],
        )
        assert config.parameters == seeded["parameters"]
        assert config.retry_config.model_dump() == {
            "max_attempts": 3,
            "base_delay_minutes": 5.0,
            "backoff_multiplier": 2.0,
        }


def test_seeding_twice_gives_the_same_tables(store):
    load_dataset(store, demo_dataset())
    load_dataset(store, demo_dataset())
    assert len(store.fetch_configs()) >= 4
    demo_customers = {c["customer_id"] for c in demo_dataset().customers}  # other tests share the emulator
    assert sorted(c["config_id"] for c in store.fetch_configs() if c["customer_id"] in demo_customers) == sorted(
        c["config_id"] for c in demo_dataset().configs
    )


def _identity(run_id: str, try_number: int = 1) -> RunIdentity:
    return RunIdentity(
        config_id="acme_gcp_cost_daily",
        customer_id="cust_acme_001",
        dag_id="cust_acme_001.acme_gcp_cost_daily",
        run_id=run_id,
        task_id="run_pipeline",
        try_number=try_number,
        logical_date=datetime.now(UTC),
        run_type="manual",
    )


def _current(store, run_key: str) -> list[dict]:
    table = f"`{store.settings.bq_project}.{store.settings.bq_dataset}.pipeline_runs_current`"
    return [dict(r.items()) for r in store.client.query(f"SELECT * FROM {table} WHERE run_key = '{run_key}'").result()]


def test_mirrored_run_is_queryable_through_the_views_once_per_transition(store, tmp_path):
    load_dataset(store, demo_dataset())
    mirror = RunStateMirror(store, tmp_path / "spool")
    identity = _identity(f"test_views_{datetime.now(UTC):%H%M%S%f}")
    started = datetime.now(UTC) - timedelta(seconds=30)
    running = run_event(identity, RunState.RUNNING, source="test", started_at=started)
    completed = run_event(identity, RunState.COMPLETED, source="test", started_at=started, ended_at=datetime.now(UTC))

    for row in (running, completed, completed, completed):  # the same transition delivered three times
        assert mirror.record(row)

    events = store.query("queries/runs_of_dag_run.sql", {"dag_id": identity.dag_id, "run_id": identity.run_id})
    assert [e["state"] for e in events] == ["RUNNING", "COMPLETED"]
    current = _current(store, identity.run_key)
    assert len(current) == 1
    assert current[0]["state"] == "COMPLETED"
    assert current[0]["transitions"] == 2
    assert 29 <= current[0]["duration_seconds"] <= 60
    view = f"`{store.settings.bq_project}.{store.settings.bq_dataset}.pipeline_configs_status`"
    status = store.client.query(f"SELECT last_run_status FROM {view} WHERE config_id = 'acme_gcp_cost_daily'").result()
    assert [r["last_run_status"] for r in status] == ["COMPLETED"]


def test_usage_view_counts_started_runs_and_quota_skips(store, tmp_path):
    load_dataset(store, demo_dataset())
    usage_table = f"`{store.settings.bq_project}.{store.settings.bq_dataset}.customer_usage`"

    def usage() -> dict:
        rows = store.client.query(f"SELECT * FROM {usage_table} WHERE customer_id = 'cust_acme_001'").result()
        return dict(next(iter(rows)).items())

    before = usage()
    mirror = RunStateMirror(store, tmp_path / "spool")
    started = _identity(f"test_usage_a_{datetime.now(UTC):%H%M%S%f}")
    skipped = _identity(f"test_usage_b_{datetime.now(UTC):%H%M%S%f}")
    mirror.record(run_event(started, RunState.RUNNING, source="test", started_at=datetime.now(UTC)))
    mirror.record(run_event(started, RunState.RETRYING, source="test", ended_at=datetime.now(UTC)))
    retry = RunIdentity(**{**started.__dict__, "try_number": 2})
    mirror.record(run_event(retry, RunState.RUNNING, source="test", started_at=datetime.now(UTC)))
    mirror.record(run_event(skipped, RunState.SKIPPED, source="test", skip_reason=SkipReason.QUOTA_EXCEEDED))

    after = usage()
    assert after["runs_today"] - before["runs_today"] == 1  # retries of one run count once
    assert after["skipped_quota_today"] - before["skipped_quota_today"] == 1


def test_cost_billing_template_aggregates_the_billing_export(store, data_store):
    demo = demo_dataset()
    load_dataset(store, demo)
    day = datetime.now(UTC).date() - timedelta(days=3)
    expected = sum(
        float(r["cost"])
        for r in demo.billing
        if r["customer_id"] == "cust_acme_001" and r["provider"] == "GCP" and r["usage_date"] == day
    )

    params = {
        "customer_id": "cust_acme_001",
        "provider": "GCP",
        "run_date": day,
        "run_key": "test/run",
        "currency": "USD",
        "lookback_days": 1,
    }
    rows = data_store.query("templates/cost_billing.sql", params)
    again = data_store.query("templates/cost_billing.sql", params)

    assert rows[0]["rows_written"] == 3  # one row per service
    assert rows[0]["total_cost"] == pytest.approx(expected, abs=0.01)
    assert again == rows  # idempotent: re-running a day replaces it


@pytest.mark.parametrize(
    ("template", "customer_id", "provider", "params"),
    [
        ("cost_billing", "cust_globex_001", "AWS", {"currency": "USD", "lookback_days": 3}),
        ("security_audit", "cust_acme_001", "GCP", {"min_severity": "MEDIUM"}),
        ("compliance_report", "cust_globex_001", "AZURE", {"framework": "SOC2"}),
        ("observability_report", "cust_acme_001", "OPENAI", {"min_requests": 0}),
        ("observability_report", "cust_globex_001", "AWS", {"min_requests": 0}),
    ],
)
def test_every_template_does_its_work_on_the_demo_data_and_reruns_identically(
    store, data_store, template, customer_id, provider, params
):
    from customer_pipelines.templates import TEMPLATES

    load_dataset(store, demo_dataset())
    assert set(params) <= set(TEMPLATES[template].params_model.model_fields)
    args = {
        "customer_id": customer_id,
        "provider": provider,
        "run_date": datetime.now(UTC).date() - timedelta(days=2),
        "run_key": f"test/{template}",
        **params,
    }

    first = data_store.query(TEMPLATES[template].sql_file, args)
    second = data_store.query(TEMPLATES[template].sql_file, args)

    assert first[0]["rows_written"] > 0
    assert second == first


def _observability(data_store: BigQueryStore, customer_id: str, provider: str, day: Any) -> dict[str, dict]:
    rows = data_store.client.query(
        f"SELECT * FROM `{data_store.table_id('observability_daily')}` "
        "WHERE customer_id = @c AND provider = @p AND report_date = @d",
        job_config=bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("c", "STRING", customer_id),
                bigquery.ScalarQueryParameter("p", "STRING", provider),
                bigquery.ScalarQueryParameter("d", "DATE", day),
            ]
        ),
    ).result()
    return {r["source"]: dict(r.items()) for r in rows}


def test_the_observability_report_gives_models_tokens_and_latency_and_services_error_rate_and_uptime(store, data_store):
    demo = demo_dataset()
    load_dataset(store, demo)
    day = datetime.now(UTC).date() - timedelta(days=2)
    usage = {(u["customer_id"], u["provider"], u["source"]): u for u in demo.usage if u["usage_date"] == day}

    def run(customer_id: str, provider: str, min_requests: int) -> list[dict[str, Any]]:
        return data_store.query(
            "templates/observability_report.sql",
            {
                "customer_id": customer_id,
                "provider": provider,
                "run_date": day,
                "run_key": f"test/obs/{provider}/{min_requests}",
                "min_requests": min_requests,
            },
        )

    assert run("cust_acme_001", "OPENAI", 0)[0]["rows_written"] == 2
    for model, row in _observability(data_store, "cust_acme_001", "OPENAI", day).items():
        source = usage[("cust_acme_001", "OPENAI", model)]
        assert (row["requests"], row["errors"]) == (source["requests"], source["errors"])
        assert row["input_tokens"] == source["input_tokens"] and row["output_tokens"] == source["output_tokens"]
        assert row["avg_latency_ms"] == pytest.approx(source["latency_ms_total"] / source["requests"])
        assert row["error_rate"] == pytest.approx(source["errors"] / source["requests"])
        assert row["uptime"] is None  # a model has no availability probes

    assert run("cust_globex_001", "AWS", 0)[0]["rows_written"] == 2
    for service, row in _observability(data_store, "cust_globex_001", "AWS", day).items():
        source = usage[("cust_globex_001", "AWS", service)]
        assert row["uptime"] == pytest.approx(source["probes_up"] / source["probes"])
        assert row["input_tokens"] is None

    # A threshold above every source's requests leaves the day empty: the earlier rows are removed.
    most = max(u["requests"] for k, u in usage.items() if k[:2] == ("cust_globex_001", "AWS"))
    assert run("cust_globex_001", "AWS", most + 1)[0]["rows_written"] == 0
    assert _observability(data_store, "cust_globex_001", "AWS", day) == {}


def test_next_run_times_are_replaced_whole_and_shown_by_the_status_view(store, tmp_path):
    from customer_pipelines.fleet.sync import Fleet, next_runs

    load_dataset(store, demo_dataset())
    refresh_snapshot(store, tmp_path / "configs.sqlite")
    with Snapshot(tmp_path / "configs.sqlite") as snapshot:
        rows = next_runs(Fleet.of(snapshot), datetime.now(UTC))
    store.load_rows("config_next_runs", rows, replace=True)
    store.load_rows("config_next_runs", rows, replace=True)  # a second round replaces, never appends

    dataset = f"{store.settings.bq_project}.{store.settings.bq_dataset}"
    count = next(iter(store.client.query(f"SELECT COUNT(*) AS n FROM `{dataset}.config_next_runs`").result()))["n"]
    assert count == len(rows) >= 4
    status = {
        r["config_id"]: r["next_run_time"]
        for r in store.client.query(
            f"SELECT config_id, next_run_time FROM `{dataset}.pipeline_configs_status`"
        ).result()
    }
    assert all(status[c["config_id"]] > datetime.now(UTC) for c in demo_dataset().configs)


def test_a_missing_table_is_a_non_retryable_error_from_bigquery(store):
    from customer_pipelines.bigquery.store import BigQueryStore, StoreError
    from customer_pipelines.runs.failures import is_retryable

    elsewhere = BigQueryStore(store.settings.model_copy(update={"bq_data_dataset": "no_such_dataset"}), plane="data")
    with pytest.raises(StoreError) as raised:
        elsewhere.query(
            "templates/cost_billing.sql",
            {
                "customer_id": "c",
                "provider": "GCP",
                "currency": "USD",
                "run_date": datetime.now(UTC).date(),
                "lookback_days": 1,
                "run_key": "k",
            },
        )
    assert not is_retryable(raised.value)
