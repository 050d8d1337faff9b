"""Failure policy on the emulator: a warning at 3 consecutive failed runs, a pause at 5 (config
inactive in BigQuery, an audit row, an alert), a success in between resets the count; only the
customer's own failures count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from customer_pipelines.runs.failure_policy import apply_failure_policy
from customer_pipelines.runs.mirror import ErrorType, RunIdentity, RunState, RunStateMirror, run_event, write_events
from customer_pipelines.seed import Dataset, config_row, customer_rows, demo_dataset, load_dataset

pytestmark = pytest.mark.integration


def _finish_runs(
    store,
    tmp_path,
    config_id: str,
    customer_id: str,
    states: list[RunState],
    error_type: ErrorType = ErrorType.PIPELINE,
) -> None:
    """One run per state, in order; failures of ``error_type`` (the customer's pipeline by default)."""
    mirror = RunStateMirror(store, tmp_path / "spool")
    base = datetime.now(UTC)  # after the config was (re)loaded: earlier failures do not count
    for i, state in enumerate(states):
        identity = RunIdentity(
            config_id=config_id,
            customer_id=customer_id,
            dag_id=f"{customer_id}.{config_id}",
            run_id=f"policy_{i}_{base:%H%M%S%f}",
            task_id="run_pipeline",
            try_number=1,
            logical_date=base + timedelta(days=i),
        )
        failed = state not in (RunState.COMPLETED, RunState.SKIPPED)
        ended = base + timedelta(milliseconds=i)
        assert mirror.record(
            run_event(identity, state, source="test", ended_at=ended, error_type=error_type.value if failed else None)
        )


def _config(store, config_id: str) -> dict:
    return next(c for c in store.fetch_configs() if c["config_id"] == config_id)


def test_five_failures_in_a_row_pause_the_config_with_an_audit_row_and_an_alert(store, tmp_path):
    load_dataset(store, demo_dataset())
    settings = store.settings.model_copy(update={"state_dir": tmp_path})
    alerts = []
    _finish_runs(
        store, tmp_path, "globex_aws_cost_daily", "cust_globex_001", [RunState.COMPLETED] + [RunState.FAILED] * 5
    )

    result = apply_failure_policy(store, settings, alerts.append)

    assert result.paused == ["cust_globex_001.globex_aws_cost_daily"]
    assert _config(store, "globex_aws_cost_daily")["is_active"] is False
    audit = store.client.query(
        f"SELECT action, reason FROM `{store.settings.bq_project}.{store.settings.bq_dataset}.pipeline_schedule_audit` "
        "WHERE config_id = 'globex_aws_cost_daily'"
    ).result()
    assert [(r["action"], r["reason"].split(" ")[0]) for r in audit] == [("AUTO_PAUSE", "5")]
    assert [(a.level, a.consecutive_failures) for a in alerts] == [("PAUSED", 5)]
    apply_failure_policy(store, settings, alerts.append)  # a paused config is not paused or alerted again
    assert len(alerts) == 1


def test_three_failures_warn_and_a_success_resets_the_count(store, tmp_path):
    load_dataset(store, demo_dataset())
    settings = store.settings.model_copy(update={"state_dir": tmp_path})
    alerts = []
    _finish_runs(store, tmp_path, "acme_gcp_security_weekly", "cust_acme_001", [RunState.FAILED] * 3)
    apply_failure_policy(store, settings, alerts.append)
    assert [(a.level, a.config_id, a.consecutive_failures) for a in alerts] == [
        ("WARNING", "acme_gcp_security_weekly", 3)
    ]
    assert _config(store, "acme_gcp_security_weekly")["is_active"] is True

    _finish_runs(store, tmp_path, "acme_gcp_security_weekly", "cust_acme_001", [RunState.COMPLETED])
    alerts.clear()
    assert apply_failure_policy(store, settings, alerts.append).warned == []


def _consecutive_failures(store, config_id: str) -> int:
    view = f"`{store.settings.bq_project}.{store.settings.bq_dataset}.pipeline_configs_status`"
    rows = store.client.query(f"SELECT consecutive_failures FROM {view} WHERE config_id = '{config_id}'").result()
    return next(iter(rows))["consecutive_failures"]


def test_platform_failures_and_manual_marks_never_count_and_never_reset_the_customers_count(store, tmp_path):
    load_dataset(store, demo_dataset())
    settings = store.settings.model_copy(update={"state_dir": tmp_path})
    config, customer = "globex_azure_compliance_monthly", "cust_globex_001"
    _finish_runs(store, tmp_path, config, customer, [RunState.FAILED] * 6, ErrorType.PLATFORM)
    _finish_runs(store, tmp_path, config, customer, [RunState.TIMEOUT], ErrorType.PLATFORM)  # waited for the ledger
    _finish_runs(store, tmp_path, config, customer, [RunState.CANCELLED], ErrorType.MANUAL)
    assert _consecutive_failures(store, config) == 0
    assert apply_failure_policy(store, settings, lambda alert: None).paused == []

    _finish_runs(store, tmp_path, config, customer, [RunState.FAILED], ErrorType.PIPELINE)
    _finish_runs(store, tmp_path, config, customer, [RunState.FAILED] * 2, ErrorType.PLATFORM)
    _finish_runs(store, tmp_path, config, customer, [RunState.TIMEOUT], ErrorType.TIMEOUT)

    assert _consecutive_failures(store, config) == 2  # the pipeline's failure and its timeout
    assert _config(store, config)["is_active"] is True


def test_a_round_evaluates_only_configs_with_a_failure_of_their_own_inside_its_lookback(store, tmp_path):
    """The round's discovery reads the run table's newest partitions only: five failures that all
    ended before the lookback are not evaluated, five inside it pause their config; a longer lookback
    reaches the older ones too."""
    stamp = f"{datetime.now(UTC):%H%M%S%f}"
    customer_id = f"lookback_{stamp}"
    loaded = datetime.now(UTC) - timedelta(days=5)
    customer, subscription = customer_rows(customer_id, "Lookback Inc", "STARTER", now=loaded)
    configs = [
        config_row(c, customer_id, c, "GCP", "COST", "cost_billing", "0 2 * * *", "UTC", now=loaded)
        for c in ("failed_days_ago", "failed_just_now")
    ]
    load_dataset(store, Dataset(customers=[customer], subscriptions=[subscription], configs=configs))
    now = datetime.now(UTC)
    for config_id, ended in (("failed_days_ago", now - timedelta(days=3)), ("failed_just_now", now)):
        events = []
        for i in range(5):
            identity = RunIdentity(
                config_id=config_id,
                customer_id=customer_id,
                dag_id=f"{customer_id}.{config_id}",
                run_id=f"run_{i}",
                task_id="run_pipeline",
                try_number=1,
                logical_date=ended - timedelta(minutes=10 - i),
            )
            at = ended - timedelta(minutes=10 - i)
            events.append(
                run_event(identity, RunState.FAILED, source="test", event_time=at, ended_at=at, error_type="PIPELINE")
            )
        write_events(store, events)
    settings = store.settings.model_copy(update={"state_dir": tmp_path, "failure_policy_lookback_hours": 24})

    assert apply_failure_policy(store, settings, lambda alert: None).paused == [f"{customer_id}.failed_just_now"]
    assert _consecutive_failures(store, "failed_days_ago") == 5  # counted by the view, not evaluated this round

    longer = settings.model_copy(update={"failure_policy_lookback_hours": 24 * 7})
    assert apply_failure_policy(store, longer, lambda alert: None).paused == [f"{customer_id}.failed_days_ago"]
