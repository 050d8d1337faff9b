"""The fleet page's BigQuery reads on the emulator, from mirror rows written as the operator writes
them: per customer, the configs failing now (and the longest streak) and today's SLA breaches, and
the finished runs per day. A customer with nothing to report is absent, not zero (the page fills in)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from customer_pipelines.runs.mirror import ErrorType, RunIdentity, RunState, RunStateMirror, run_event
from customer_pipelines.seed import Dataset, config_row, customer_rows, load_dataset

pytestmark = pytest.mark.integration

CUSTOMER = "cust_overview_001"
QUIET = "cust_overview_002"


def _run(mirror, config_id: str, n: int, state: RunState, started: datetime, minutes: float, customer: str = CUSTOMER):
    identity = RunIdentity(
        config_id=config_id,
        customer_id=customer,
        dag_id=f"{customer}.{config_id}",
        run_id=f"overview_{config_id}_{n}",
        task_id="run_pipeline",
        try_number=1,
        logical_date=started,
    )
    failed = state == RunState.FAILED
    # As the operator writes a run: RUNNING when its pipeline starts, then how it ended.
    assert mirror.record(run_event(identity, RunState.RUNNING, source="test", started_at=started))
    assert mirror.record(
        run_event(
            identity,
            state,
            source="test",
            started_at=started,
            ended_at=started + timedelta(minutes=minutes),
            error_type=ErrorType.PIPELINE.value if failed else None,
        )
    )


def test_failing_configs_sla_breaches_and_outcomes_per_day_come_from_the_mirror(store, tmp_path):
    now = datetime.now(UTC)
    customer, subscription = customer_rows(CUSTOMER, "Overview Inc", "SCALE", now=now)
    quiet, quiet_subscription = customer_rows(QUIET, "Quiet Inc", "STARTER", now=now)

    def config(config_id: str, customer_id: str, sla: int | None) -> dict:
        # Written two days ago: the failure count starts at a config's last change (the view's rule).
        row = config_row(
            config_id,
            customer_id,
            config_id,
            "GCP",
            "COST",
            "cost_billing",
            "0 2 * * *",
            "UTC",
            now=now - timedelta(days=2),
        )
        return {**row, "sla_breach_threshold_minutes": sla}

    load_dataset(
        store,
        Dataset(
            customers=[customer, quiet],
            subscriptions=[subscription, quiet_subscription],
            configs=[config("flaky", CUSTOMER, None), config("slow", CUSTOMER, 5), config("fine", QUIET, 5)],
        ),
    )
    mirror = RunStateMirror(store, tmp_path / "spool")
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = today - timedelta(days=1)
    # flaky: a success yesterday, then two failures in a row (one yesterday, one today)
    _run(mirror, "flaky", 1, RunState.COMPLETED, yesterday + timedelta(hours=1), 1)
    _run(mirror, "flaky", 2, RunState.FAILED, yesterday + timedelta(hours=2), 1)
    _run(mirror, "flaky", 3, RunState.FAILED, max(today, now - timedelta(minutes=30)), 1)
    # slow: two runs today past its 5-minute SLA and one within it; one yesterday past it
    _run(mirror, "slow", 1, RunState.COMPLETED, max(today, now - timedelta(minutes=40)), 12)
    _run(mirror, "slow", 2, RunState.COMPLETED, max(today, now - timedelta(minutes=20)), 9)
    _run(mirror, "slow", 3, RunState.COMPLETED, max(today, now - timedelta(minutes=10)), 2)
    _run(mirror, "slow", 4, RunState.COMPLETED, yesterday + timedelta(hours=3), 30)
    # the quiet customer: one run within its SLA
    _run(mirror, "fine", 1, RunState.COMPLETED, max(today, now - timedelta(minutes=5)), 1, customer=QUIET)

    failing = {r["customer_id"]: r for r in store.query("queries/fleet_failing_configs.sql")}
    assert (failing[CUSTOMER]["failing_configs"], failing[CUSTOMER]["longest_streak"]) == (1, 2)
    assert QUIET not in failing

    breaches = {r["customer_id"]: r["sla_breaches"] for r in store.query("queries/fleet_sla_breaches_today.sql")}
    assert breaches.get(CUSTOMER) == 2, breaches
    assert QUIET not in breaches

    by_day = {
        str(r["day"]): (r["completed"], r["failed"])
        for r in store.query("queries/fleet_outcomes_by_day.sql", {"customer_id": CUSTOMER})
    }
    assert by_day[yesterday.date().isoformat()] == (2, 1)
    assert by_day[today.date().isoformat()] == (3, 1)
    everyone = {
        str(r["day"]): (r["completed"], r["failed"])
        for r in store.query("queries/fleet_outcomes_by_day.sql", {"customer_id": ""})
    }
    assert everyone[today.date().isoformat()][0] >= 4, "the quiet customer's run counts in the fleet's"
