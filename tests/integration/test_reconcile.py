"""Reconciliation on the emulator: what it writes for awkward tries and what the views show after.
The records are Airflow 3.3.2's as its code writes them (each case says where);
tests/e2e/test_mirror_paths.py takes the same cases through real Airflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from customer_pipelines.runs.mirror import RunIdentity, RunState, SkipReason, run_event, write_events
from customer_pipelines.runs.reconcile import TryRecord, reconcile_tries
from customer_pipelines.seed import Dataset, config_row, customer_rows, load_dataset
from tests_support import rows_of_customer

pytestmark = pytest.mark.integration


def _today_utc_minutes_ago(minutes: int) -> datetime:
    """A recent time on today's UTC date (the usage view counts by UTC day)."""
    now = datetime.now(UTC).replace(microsecond=0)
    return max(now - timedelta(minutes=minutes), now.replace(hour=0, minute=0, second=0))


class Tenant:
    """A customer of its own with one config, loaded an hour before its runs (the failure count
    starts when the config last changed)."""

    def __init__(self, store, prefix: str) -> None:
        self.store = store
        stamp = f"{datetime.now(UTC):%H%M%S%f}"
        self.customer_id, self.config_id = f"{prefix}_{stamp}", f"cfg_{prefix}_{stamp}"
        self.dag_id = f"{self.customer_id}.{self.config_id}"
        # taken when the test runs, not at import: a suite crossing midnight must still see today's runs
        self.t0 = _today_utc_minutes_ago(30)
        loaded = datetime.now(UTC) - timedelta(hours=1)
        customer, subscription = customer_rows(self.customer_id, f"{self.customer_id} Inc", "STARTER", now=loaded)
        config = config_row(
            self.config_id, self.customer_id, "cfg", "GCP", "COST", "cost_billing", "0 2 * * *", "UTC", now=loaded
        )
        load_dataset(store, Dataset(customers=[customer], subscriptions=[subscription], configs=[config]))

    def identity(self, run_id: str, try_number: int | None) -> RunIdentity:
        return RunIdentity(
            config_id=self.config_id,
            customer_id=self.customer_id,
            dag_id=self.dag_id,
            run_id=run_id,
            task_id="run_pipeline",
            try_number=try_number,
            logical_date=self.t0,
            scheduled_time=self.t0,
            run_type="manual",
        )

    def mirrored(self, run_id: str, try_number: int, state: RunState, source: str = "operator", **fields) -> None:
        write_events(self.store, [run_event(self.identity(run_id, try_number), state, source=source, **fields)])

    def airflow(self, run_id: str, try_number: int, state: str | None, start: datetime, end: datetime | None, **kw):
        return TryRecord(self.dag_id, run_id, try_number, state, start, end, self.t0, "manual", self.t0, **kw)

    def view(self, name: str, where: str = "") -> list[dict]:
        return rows_of_customer(self.store, name, self.customer_id, where)

    def current(self, run_id: str) -> dict:
        [row] = self.view("pipeline_runs_current", f"AND run_id = '{run_id}'")
        return row

    def usage(self) -> dict:
        [row] = self.view("customer_usage")
        return row


def _written(result) -> list[tuple[str, int, str]]:
    return sorted((w["run_id"], w["try_number"], w["state"]) for w in result.written)


def test_a_quota_skipped_try_and_a_queued_retry_reconciled_count_only_runs_that_ran(store):
    tenant = Tenant(store, "rq")
    t = tenant.t0
    # ran: the operator's RUNNING and COMPLETED are in the mirror
    tenant.mirrored("ran", 1, RunState.RUNNING, started_at=t)
    tenant.mirrored("ran", 1, RunState.COMPLETED, started_at=t, ended_at=t + timedelta(minutes=1))
    # refused at the quota gate: a worker started the try (start_date set), the operator wrote SKIPPED only
    tenant.mirrored("quota", 1, RunState.SKIPPED, skip_reason=SkipReason.QUOTA_EXCEEDED, ended_at=t)
    # retried: try 1 ran and failed; schedule_tis raised try_number to 2 and kept try 1's dates
    tenant.mirrored("retry", 1, RunState.RUNNING, started_at=t)
    tenant.mirrored("retry", 1, RunState.RETRYING, started_at=t, ended_at=t + timedelta(minutes=1))
    # marked success by a person before it ran: set_state set a start_date, no worker started it
    tenant.mirrored("marked", 1, RunState.COMPLETED, source="listener:manual", ended_at=t)
    airflow = [
        tenant.airflow("ran", 1, "success", t, t + timedelta(minutes=1), max_tries=1, started_by_worker=True),
        tenant.airflow("quota", 1, "skipped", t, t, max_tries=1, started_by_worker=True),
        tenant.airflow(
            "retry", 1, "failed", t, t + timedelta(minutes=1), max_tries=1, archived=True, started_by_worker=True
        ),
        tenant.airflow("retry", 2, "queued", t, t + timedelta(minutes=1), max_tries=1),
        tenant.airflow("marked", 1, "success", t, t, max_tries=1),
    ]

    result = reconcile_tries(store, airflow)

    assert _written(result) == []
    usage = tenant.usage()
    assert (usage["runs_today"], usage["runs_this_month"], usage["skipped_quota_today"]) == (1 + 1, 1 + 1, 1)
    assert tenant.current("quota")["started_at"] is None
    assert tenant.current("marked")["started_at"] is None
    # the retry starts for real: its RUNNING is the operator's, at its own start
    real_start = datetime.now(UTC).replace(microsecond=0)
    tenant.mirrored("retry", 2, RunState.RUNNING, started_at=real_start)
    [running] = tenant.view("scheduled_pipeline_run_events", "AND run_id = 'retry' AND try_number = 2")
    assert (running["state"], running["started_at"], running["source"]) == ("RUNNING", real_start, "operator")


def test_reconcile_of_a_try_waiting_for_its_retry_writes_retrying_only_and_counts_no_failure(store):
    tenant = Tenant(store, "rw")
    t, ended = tenant.t0, tenant.t0 + timedelta(minutes=1)
    tenant.mirrored("waiting", 1, RunState.RUNNING, started_at=t)  # its RETRYING was lost with the spool
    # ti_update_state archives the try as 'failed' (record_ti) while the row is up_for_retry, same end date
    airflow = [
        tenant.airflow("waiting", 1, "up_for_retry", t, ended, max_tries=1, started_by_worker=True),
        tenant.airflow("waiting", 1, "failed", t, ended, max_tries=1, archived=True, started_by_worker=True),
    ]

    assert _written(reconcile_tries(store, airflow)) == [("waiting", 1, "RETRYING")]

    assert tenant.current("waiting")["state"] == "RETRYING"
    [status] = tenant.view("pipeline_configs_status")
    assert (status["consecutive_failures"], status["last_run_status"]) == (0, None)
    assert _written(reconcile_tries(store, airflow)) == []  # nothing twice


def test_reconcile_ends_a_dag_run_marked_success_while_its_task_waited_for_a_retry(store):
    tenant = Tenant(store, "rm")
    t, ended = tenant.t0, tenant.t0 + timedelta(minutes=1)
    tenant.mirrored("marked", 1, RunState.RUNNING, started_at=t)
    tenant.mirrored("marked", 1, RunState.RETRYING, started_at=t, ended_at=ended)
    # set_dag_run_state_to_success: the pending task's set_state(SKIPPED) keeps its try, start and end
    airflow = [
        tenant.airflow("marked", 1, "skipped", t, ended, max_tries=1, started_by_worker=True),
        tenant.airflow("marked", 1, "failed", t, ended, max_tries=1, archived=True, started_by_worker=True),
    ]
    assert tenant.usage()["running_now"] == 1

    assert _written(reconcile_tries(store, airflow)) == [("marked", 1, "SKIPPED")]

    assert tenant.current("marked")["state"] == "SKIPPED"
    assert tenant.view("currently_running_pipelines") == []
    assert tenant.usage()["running_now"] == 0
    assert tenant.usage()["runs_today"] == 1  # it ran once, before its retry was skipped
