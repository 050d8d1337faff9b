"""Executions of a run on the emulator and the quota ledger's PostgreSQL: Airflow runs the same
run_id again when a person clears it or a backfill reprocesses it (``DagRun.clear_number`` counts
those), and each such execution is its own unit of quota and its own life in the mirror.

tests/e2e/test_quota_on_airflow.py and tests/e2e/test_mirror_paths.py take the same cases through a
real Airflow (clears, a backfill reprocessing a run, marks through the REST API)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk.api.datamodels._generated import DagRun as SdkDagRun
from airflow.sdk.exceptions import AirflowSkipException, AirflowTaskTimeout
from airflow.sdk.execution_time.timeout import timeout

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.models import Customer
from customer_pipelines.runs.mirror import RUNS_TABLE, RunIdentity, RunState, RunStateMirror, run_event
from customer_pipelines.runs.operators import CustomerPipelineOperator
from customer_pipelines.runs.quota import QuotaLedger
from customer_pipelines.seed import Dataset, config_row, customer_rows, load_dataset
from customer_pipelines.settings import Settings
from customer_pipelines.snapshot import refresh_snapshot
from tests_support import rows_of_customer

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class RunningTry:
    """The attributes of the task runner's RuntimeTaskInstance the operator reads (``context["ti"]``);
    the rest of the context is Airflow's own Task SDK models."""

    dag_id: str
    run_id: str
    try_number: int
    max_tries: int
    start_date: datetime
    task_id: str = "run_pipeline"


class Tenant:
    """A customer of its own with one config (cost_billing, SLA 30 minutes) in BigQuery."""

    def __init__(self, store: BigQueryStore, prefix: str) -> None:
        self.store = store
        stamp = f"{datetime.now(UTC):%H%M%S%f}"
        self.customer_id, self.config_id = f"{prefix}_{stamp}", f"cfg_{prefix}_{stamp}"
        self.dag_id = f"{self.customer_id}.{self.config_id}"
        loaded = datetime.now(UTC) - timedelta(days=3)
        customer, subscription = customer_rows(self.customer_id, f"{self.customer_id} Inc", "STARTER", now=loaded)
        subscription["valid_from"] = loaded
        config = config_row(
            self.config_id, self.customer_id, "cfg", "GCP", "COST", "cost_billing", "0 2 * * *", "UTC", now=loaded
        )
        load_dataset(store, Dataset(customers=[customer], subscriptions=[subscription], configs=[config]))
        self.operator = CustomerPipelineOperator(
            task_id="run_pipeline",
            config_id=self.config_id,
            customer_id=self.customer_id,
            provider="GCP",
            pipeline_template="cost_billing",
            timezone="UTC",
        )

    def customer(self, daily: int, monthly: int) -> Customer:
        return Customer(
            customer_id=self.customer_id,
            status="ACTIVE",
            plan="STARTER",
            daily_run_limit=daily,
            monthly_run_limit=monthly,
            max_concurrent_runs=5,
        )

    def context(
        self,
        run_id: str,
        *,
        clear_number: int,
        try_number: int,
        run_type: str = "scheduled",
        max_tries: int = 2,
        logical: datetime = datetime(2026, 11, 30, 2, tzinfo=UTC),
        run_after: datetime | None = None,
    ) -> dict:
        """A task's context as the Task SDK gives it: the DAG run (with its clear_number) and the try;
        ``logical`` is the tick, ``run_after`` when the run was due (the tick unless a start window)."""
        dag_run = SdkDagRun(
            dag_id=self.dag_id,
            run_id=run_id,
            logical_date=logical,
            data_interval_start=logical,
            data_interval_end=logical,
            run_after=run_after or logical,
            start_date=datetime.now(UTC),
            end_date=None,
            clear_number=clear_number,
            run_type=run_type,
            state="running",
            consumed_asset_events=[],
            partition_key=None,
        )
        ti = RunningTry(self.dag_id, run_id, try_number, max_tries, datetime.now(UTC))
        return {"dag_run": dag_run, "ti": ti, "logical_date": logical}

    def view(self, name: str, where: str = "") -> list[dict]:
        return rows_of_customer(self.store, name, self.customer_id, where)

    def current(self, run_id: str) -> dict:
        [row] = self.view("pipeline_runs_current", f"AND run_id = '{run_id}'")
        return row


@pytest.fixture
def task_settings(store, quota_db_url, tmp_path, monkeypatch):
    """The settings a task (and Airflow's listeners) read from the environment: this emulator and
    ledger, a state directory (spool, snapshot) of the test's own."""
    from customer_pipelines.settings import get_settings

    for name, value in {
        "CP_STATE_DIR": str(tmp_path),
        "BIGQUERY_EMULATOR_HOST": store.settings.bigquery_emulator_host,
        "CP_BQ_PROJECT": store.settings.bq_project,
        "CP_QUOTA_DB_URL": quota_db_url,
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    settings = get_settings()
    QuotaLedger(settings).ensure_schema()
    yield settings
    get_settings.cache_clear()


def _ledger_days(quota_db_url: str, customer_id: str) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(quota_db_url) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT run_key, usage_day FROM cp_quota_reservations WHERE customer_id = %s ORDER BY reserved_at",
            (customer_id,),
        )
        rows = cur.fetchall()
    conn.close()
    return rows


def test_a_run_cleared_and_rerun_the_next_day_counts_on_that_day_and_is_refused_at_the_daily_limit(
    store, quota_db_url, tmp_path
):
    tenant = Tenant(store, "clear_quota")
    settings = Settings(quota_db_url=quota_db_url)
    QuotaLedger(settings).ensure_schema()
    customer = tenant.customer(daily=1, monthly=10)
    mirror = RunStateMirror(store, tmp_path / "spool")
    now = datetime.now(UTC)
    yesterday = QuotaLedger(settings, clock=lambda: now - timedelta(days=1))
    today = QuotaLedger(settings, clock=lambda: now)
    scheduled, manual = "scheduled__2026-11-30T02:00:00+00:00", "manual__2026-11-30T09:00:00+00:00"

    def start(ledger: QuotaLedger, run_id: str, clear_number: int, try_number: int, run_type: str = "scheduled"):
        """The operator's gate, then RUNNING as the operator writes it once the gate let it through."""
        tick = (now - timedelta(days=1)).replace(hour=2, minute=0, second=0, microsecond=0)  # yesterday's 02:00
        context = tenant.context(
            run_id, clear_number=clear_number, try_number=try_number, run_type=run_type, logical=tick
        )
        identity = tenant.operator.run_identity(context)
        tenant.operator._reserve(settings, mirror, identity, customer, ledger)
        started = ledger.clock()
        mirror.record(run_event(identity, RunState.RUNNING, source="operator", started_at=started))
        mirror.record(run_event(identity, RunState.COMPLETED, source="operator", started_at=started, ended_at=started))

    # yesterday: the scheduled run takes the day's unit; a manual run is refused
    start(yesterday, scheduled, clear_number=0, try_number=1)
    with pytest.raises(AirflowSkipException, match="DAILY_LIMIT"):
        start(yesterday, manual, clear_number=0, try_number=1, run_type="manual")
    # today: yesterday's run cleared and run again is a new unit, on today's count
    start(today, scheduled, clear_number=1, try_number=2)
    # its retry belongs to the same execution and shares the unit
    start(today, scheduled, clear_number=1, try_number=3)
    # cleared once more the same day: refused at the daily limit, mirrored like any refused run
    with pytest.raises(AirflowSkipException, match="DAILY_LIMIT"):
        start(today, scheduled, clear_number=2, try_number=4)

    dag_run = f"{tenant.dag_id}/{scheduled}"
    assert _ledger_days(quota_db_url, tenant.customer_id) == [
        (dag_run, (now - timedelta(days=1)).date()),
        (f"{dag_run}#1", now.date()),
    ]
    current = tenant.current(scheduled)
    assert (current["state"], current["skip_reason"], current["clear_number"]) == ("SKIPPED", "QUOTA_EXCEEDED", 2)
    [usage] = tenant.view("customer_usage")
    assert usage["runs_today"] == 1  # the cleared run's execution of today, not yesterday's
    # both refusals: the ledger's clock is injected, the mirror stamps a skip when it is written (now)
    assert usage["skipped_quota_today"] == 2
    executions = tenant.view("pipeline_executions", f"AND run_id = '{scheduled}' ORDER BY clear_number")
    assert [
        (e["clear_number"], e["state"], e["started_at"].date() if e["started_at"] else None) for e in executions
    ] == [
        (0, "COMPLETED", (now - timedelta(days=1)).date()),
        (1, "COMPLETED", now.date()),
        (2, "SKIPPED", None),
    ]


def test_a_2359_ticks_run_started_after_midnight_by_its_start_window_counts_on_the_ticks_day(
    store, quota_db_url, tmp_path
):
    """Issue 23: a config's start window (or a slow queue) can start a 23:59 tick's run the next day;
    its unit is the tick's day's, in the ledger and in BigQuery's usage view, and the next day keeps
    its whole limit. The twin: a manual run of the tick's day, started that day, finds the day used."""
    tenant = Tenant(store, "window_quota")
    settings = Settings(quota_db_url=quota_db_url)
    QuotaLedger(settings).ensure_schema()
    customer = tenant.customer(daily=1, monthly=10)
    mirror = RunStateMirror(store, tmp_path / "spool")
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
    tick = today - timedelta(minutes=12 * 60 + 1)  # 23:59 yesterday
    started = today.replace(hour=0, minute=1)  # 00:01 today, inside a 5-minute window
    after_midnight = QuotaLedger(settings, clock=lambda: started)
    on_the_ticks_day = QuotaLedger(settings, clock=lambda: tick + timedelta(seconds=30))
    scheduled = f"scheduled__{(started - timedelta(minutes=1)).isoformat()}"

    def start(ledger: QuotaLedger, run_id: str, run_type: str) -> None:
        context = tenant.context(
            run_id, clear_number=0, try_number=1, run_type=run_type, logical=tick, run_after=started
        )
        identity = tenant.operator.run_identity(context)
        tenant.operator._reserve(settings, mirror, identity, customer, ledger)
        mirror.record(run_event(identity, RunState.RUNNING, source="operator", started_at=ledger.clock()))
        mirror.record(
            run_event(identity, RunState.COMPLETED, source="operator", started_at=ledger.clock(), ended_at=started)
        )

    start(after_midnight, scheduled, "scheduled")
    assert _ledger_days(quota_db_url, tenant.customer_id) == [(f"{tenant.dag_id}/{scheduled}", tick.date())]
    # the tick's day is used up: a manual run asking on that day is refused ...
    with pytest.raises(AirflowSkipException, match="DAILY_LIMIT"):
        start(on_the_ticks_day, "manual__late_evening", "manual")
    # ... while today keeps its unit: a manual run today is allowed
    start(after_midnight, "manual__this_morning", "manual")
    assert sorted(_ledger_days(quota_db_url, tenant.customer_id)) == sorted(
        [(f"{tenant.dag_id}/{scheduled}", tick.date()), (f"{tenant.dag_id}/manual__this_morning", started.date())]
    )
    [execution] = tenant.view("pipeline_executions", f"AND run_id = '{scheduled}'")
    assert (execution["logical_date"], execution["scheduled_time"]) == (tick, started)  # the tick, and when due
    assert execution["started_at"].date() == started.date()
    [usage] = tenant.view("customer_usage")
    assert usage["runs_today"] == 1, "the 23:59 tick's run counts on yesterday, only today's manual run today"


def test_a_cleared_run_shows_its_new_queued_and_running_and_its_sla_is_measured_on_the_new_execution(
    store, task_settings, tmp_path
):
    """The scheduler's listener reports each execution's SCHEDULED and QUEUED from Airflow's DagRun
    model (a clear raises clear_number and resets queued_at and start_date); the operator then
    reports the new try."""
    from airflow.models.dagrun import DagRun

    from customer_pipelines.runs import listeners

    tenant = Tenant(store, "clear_views")
    run_id = "scheduled__2026-11-30T02:00:00+00:00"
    now = datetime.now(UTC).replace(microsecond=0)
    first = now - timedelta(days=1)
    mirror = RunStateMirror(store, tmp_path / "spool")

    def queued(at: datetime, clear_number: int) -> None:
        dag_run = DagRun(
            tenant.dag_id,
            run_id,
            queued_at=at,
            logical_date=first,
            run_after=first,
            start_date=at + timedelta(seconds=5),
            run_type="scheduled",
        )
        dag_run.clear_number = clear_number
        listeners.on_dag_run_running(dag_run=dag_run, msg="")
        RunStateMirror(BigQueryStore(task_settings), task_settings.spool_dir).drain()

    def ran(at: datetime, clear_number: int, try_number: int, *, end: bool) -> None:
        identity = tenant.operator.run_identity(
            tenant.context(run_id, clear_number=clear_number, try_number=try_number)
        )
        mirror.record(run_event(identity, RunState.RUNNING, source="operator", started_at=at))
        if end:
            done = at + timedelta(minutes=1)
            mirror.record(run_event(identity, RunState.COMPLETED, source="operator", started_at=at, ended_at=done))

    queued(first, 0)
    ran(first + timedelta(seconds=10), 0, 1, end=True)
    assert tenant.current(run_id)["state"] == "COMPLETED"

    # cleared today: queued again
    queued(now - timedelta(minutes=3), 1)
    current = tenant.current(run_id)
    assert (current["state"], current["clear_number"], current["started_at"]) == ("QUEUED", 1, None)
    assert [r["state"] for r in tenant.view("currently_running_pipelines", f"AND run_id = '{run_id}'")] == ["QUEUED"]

    ran(now - timedelta(minutes=2), 1, 2, end=False)
    current = tenant.current(run_id)
    assert (current["state"], current["try_number"], current["started_at"]) == (
        "RUNNING",
        2,
        now - timedelta(minutes=2),
    )
    assert [r["state"] for r in tenant.view("currently_running_pipelines", f"AND run_id = '{run_id}'")] == ["RUNNING"]

    ran(now - timedelta(minutes=2), 1, 2, end=True)
    current = tenant.current(run_id)
    assert current["state"] == "COMPLETED" and current["ended_at"] - current["started_at"] == timedelta(minutes=1)
    # two one-minute executions a day apart: no SLA breach (the threshold is 30 minutes)
    assert tenant.view("sla_breaches", f"AND run_id = '{run_id}'") == []
    # the twin: an execution that does take longer than its SLA is reported
    long_run = "scheduled__2026-11-29T02:00:00+00:00"
    identity = tenant.operator.run_identity(tenant.context(long_run, clear_number=1, try_number=2))
    mirror.record(run_event(identity, RunState.RUNNING, source="operator", started_at=now - timedelta(minutes=45)))
    [breach] = tenant.view("sla_breaches", f"AND run_id = '{long_run}'")
    assert 44 <= breach["elapsed_minutes"] <= 46


def test_a_timeout_during_the_final_write_is_mirrored_as_the_tries_failure_never_completed(
    store, task_settings, monkeypatch
):
    """The fault a test cannot cause with the emulator alone: BigQuery stores the COMPLETED row and
    then answers slowly (a stand-in around the real store's insert: the real insert, then a wait of
    the store's whole deadline). The task's execution_timeout is Airflow's own SIGALRM."""
    from customer_pipelines.bigquery.store import INSERT_DEADLINE_SECONDS

    tenant = Tenant(store, "final_write")
    refresh_snapshot(store, task_settings.snapshot_file)
    real_insert = BigQueryStore.insert_rows
    stored: list[str] = []

    def insert_then_answer_slowly(self, table, rows, *args, **kwargs):
        result = real_insert(self, table, rows, *args, **kwargs)
        if table == RUNS_TABLE and any(r["state"] == RunState.COMPLETED.value for r in rows):
            stored.append("COMPLETED")
            time.sleep(INSERT_DEADLINE_SECONDS)
        return result

    monkeypatch.setattr(BigQueryStore, "insert_rows", insert_then_answer_slowly)
    run_id = "manual__2026-11-30T10:00:00+00:00"
    context = tenant.context(run_id, clear_number=0, try_number=1, max_tries=0)

    with pytest.raises(AirflowTaskTimeout), timeout(8):
        tenant.operator.execute(context)

    assert stored == ["COMPLETED"]  # the fault happened where it should: the row is in BigQuery
    monkeypatch.setattr(BigQueryStore, "insert_rows", real_insert)
    states = [
        e["state"] for e in store.query("queries/runs_of_dag_run.sql", {"dag_id": tenant.dag_id, "run_id": run_id})
    ]
    assert states == ["RUNNING", "COMPLETED", "TIMEOUT"]
    current = tenant.current(run_id)
    assert (current["state"], current["error_type"]) == ("TIMEOUT", "PLATFORM")


def test_a_try_whose_final_write_answers_in_time_is_mirrored_completed(store, task_settings):
    """The twin of the timeout above: the same run with an answer in time ends COMPLETED."""
    tenant = Tenant(store, "final_write_ok")
    refresh_snapshot(store, task_settings.snapshot_file)
    run_id = "manual__2026-11-30T11:00:00+00:00"

    with timeout(60):
        tenant.operator.execute(tenant.context(run_id, clear_number=0, try_number=1, max_tries=0))

    assert tenant.current(run_id)["state"] == "COMPLETED"


def test_a_runs_table_created_before_executions_gets_the_column_and_its_rows_read_as_first_executions(store):
    """Applying the schema to a deployed table: ALTER TABLE ... ADD COLUMN IF NOT EXISTS adds
    clear_number, the views read its old rows (NULL) as the first execution, and a second apply
    changes nothing."""
    from customer_pipelines.bigquery.sql import load_sql

    settings = store.settings.model_copy(update={"bq_dataset": f"legacy_{datetime.now(UTC):%H%M%S%f}"})
    legacy = BigQueryStore(settings)
    legacy.client.create_dataset(f"{legacy.project}.{legacy.dataset}")
    table_sql = load_sql("schema/050_scheduled_pipeline_runs.sql", settings, "control")
    before = "\n".join(line for line in table_sql.splitlines() if not line.lstrip().startswith("clear_number"))
    legacy.client.query(before).result()
    assert "clear_number" not in {f.name for f in legacy.client.get_table(legacy.table_id(RUNS_TABLE)).schema}
    identity = RunIdentity("cfg_old", "cust_old", "cust_old.cfg_old", "scheduled__2026-11-01T02:00:00+00:00")
    old = run_event(identity, RunState.COMPLETED, source="operator", ended_at=datetime.now(UTC))
    old.pop("clear_number")
    legacy.insert_rows(RUNS_TABLE, [old], row_ids=[old["event_key"]])

    legacy.for_plane("control").apply_plane_schema()
    legacy.for_plane("control").apply_plane_schema()

    assert "clear_number" in {f.name for f in legacy.client.get_table(legacy.table_id(RUNS_TABLE)).schema}
    table = f"`{legacy.project}.{legacy.dataset}.pipeline_runs_current`"
    [row] = [dict(r.items()) for r in legacy.client.query(f"SELECT * FROM {table}").result()]
    assert (row["state"], row["clear_number"], row["execution_key"]) == ("COMPLETED", 0, row["run_key"])


def test_a_backfill_run_mirrored_by_its_task_reads_as_backfill_and_older_rows_with_the_enum_name_too(
    store, task_settings
):
    tenant = Tenant(store, "bfkind")
    refresh_snapshot(store, task_settings.snapshot_file)
    context = tenant.context("backfill__2026-11-30T02:00:00+00:00", clear_number=0, try_number=1, run_type="backfill")
    with timeout(60):
        tenant.operator.execute(context)
    assert tenant.current("backfill__2026-11-30T02:00:00+00:00")["run_type"] == "backfill"

    # a row written before the mirror stored the value: the Task SDK enum's name
    identity = RunIdentity(tenant.config_id, tenant.customer_id, tenant.dag_id, "backfill__old", run_type="x")
    old = run_event(identity, RunState.COMPLETED, source="operator", ended_at=datetime.now(UTC))
    old["run_type"] = "DagRunType.BACKFILL"
    store.insert_rows(RUNS_TABLE, [old], row_ids=[old["event_key"]])
    assert tenant.current("backfill__old")["run_type"] == "backfill"


def test_an_operators_quota_exemption_lets_that_backfill_tick_run_at_the_limit_and_nothing_else(
    store, quota_db_url, tmp_path
):
    from customer_pipelines.runs.quota import QuotaExemptions

    tenant = Tenant(store, "exempt")
    settings = Settings(quota_db_url=quota_db_url)
    QuotaLedger(settings).ensure_schema()
    customer = tenant.customer(daily=1, monthly=10)
    mirror = RunStateMirror(store, tmp_path / "spool")
    tick = datetime(2026, 11, 30, 2, tzinfo=UTC)  # Tenant.context's logical date
    run_id = "backfill__2026-11-30T02:00:00+00:00"

    def reserve(run_id: str, run_type: str, logical: datetime = tick) -> None:
        context = tenant.context(run_id, clear_number=0, try_number=1, run_type=run_type, logical=logical)
        tenant.operator._reserve(settings, mirror, tenant.operator.run_identity(context), customer)

    # today's one unit: a scheduled run counts on its tick's day, so its tick is today's
    this_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    reserve("scheduled__2026-11-29T02:00:00+00:00", "scheduled", logical=this_hour)
    with pytest.raises(AirflowSkipException, match="DAILY_LIMIT"):
        reserve(run_id, "backfill")  # counted, like any run

    QuotaExemptions(settings).record(tenant.dag_id, [tick], backfill_id=7, decided_by="airflow:ops")
    assert QuotaExemptions(settings).decided_by(tenant.dag_id, tick) == "airflow:ops"
    reserve(run_id, "backfill")  # exempted: runs, takes no unit
    with pytest.raises(AirflowSkipException, match="DAILY_LIMIT"):
        reserve("manual__2026-11-30T02:00:00+00:00", "manual")  # the same tick run by hand still counts
    assert [key for key, _ in _ledger_days(quota_db_url, tenant.customer_id)] == [
        f"{tenant.dag_id}/scheduled__2026-11-29T02:00:00+00:00"
    ]
