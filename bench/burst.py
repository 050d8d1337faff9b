"""Burst (issue 23): many runs due at one tick, ours as shipped against plain Airflow on the same
machine and the same PostgreSQL server, one after the other in one command.

- ``ours``: the local stack as ``make demo`` starts it (our shipped settings: stack and Airflow), N
  configs of 20 customers (ENTERPRISE plan) at a daily cron whose tick is a few minutes ahead, each
  run mirrored into BigQuery (the emulator);
- ``plain``: Airflow 3.3 itself with its defaults (LocalExecutor on the same embedded PostgreSQL
  build, no plugin, Airflow's default parallelism and parsing intervals), N trivial one-task DAGs
  (a Python task that returns), each in a file of its own (``--plain-layout one-file``: all in one),
  at the same kind of cron;
- ``provider`` (benchmark b): the same BigQuery work without our layer: N DAGs each running the
  template's MERGE with the google provider's own ``BigQueryInsertJobOperator`` (its defaults) on the
  same emulator, PostgreSQL build and shipped Airflow settings (and the same preload of what the
  task imports); no quota gate, mirror, snapshot or plugin: what our layer costs;
- ``--window-minutes W`` (ours only): every config declares a start window of W minutes
  (benchmark c: the spread of start times against none).

For each: when the runs were created after the tick (created over), when their task started
(p50/p95, from the tick; with a window also from each run's own due time), when the last run ended
(all done), runs lost (no run for the tick) and runs not successful; for ours, the runs mirrored
terminal in BigQuery. Prints a table and writes JSON to bench/results/.

    flock /tmp/cp-e2e.lock env PYTHONPATH=plugins .venv/bin/python bench/burst.py --runs 200,1000
    flock /tmp/cp-e2e.lock env PYTHONPATH=plugins .venv/bin/python bench/burst.py --runs 200 --variants provider,ours
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stack_fleet import free_port, tree_cpu_seconds

RESULTS = Path(__file__).resolve().parent / "results"
CUSTOMERS = 20
TERMINAL = ("success", "failed")


def _tick_after(lead: timedelta) -> datetime:
    return (datetime.now(UTC) + lead).replace(second=0, microsecond=0) + timedelta(minutes=1)


def _lead(runs: int) -> timedelta:
    """Time to load, sync and parse ``runs`` new DAGs before their tick (200 took about 20 s)."""
    return timedelta(seconds=60 + runs * 0.1)


EXECUTOR = "LocalExecutor"
"""ours: the stack's executor (--executor); Celery runs two workers of 8 tasks each (parallelism 16)."""


def _settings(prefix: str) -> Any:
    from customer_pipelines.settings import Settings

    state = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    state.chmod(0o700)
    return Settings(
        state_dir=state,
        emulator_port=free_port(),
        emulator_grpc_port=free_port(),
        airflow_port=free_port(),
        bq_project="bench-project",
        executor=EXECUTOR,
        celery_workers=2,
        celery_worker_concurrency=8,
        redis_port=free_port(),
    )


def _airflow_settings(env: dict[str, str]) -> dict[str, str]:
    """The AIRFLOW__ settings a case ran with, without secrets or connection URLs (for the JSON)."""
    return {
        k: v
        for k, v in env.items()
        if k.startswith("AIRFLOW__") and "SECRET" not in k and "KEY" not in k and "CONN" not in k
    }


def _connect(url: str) -> Any:
    import psycopg2

    conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    conn.autocommit = True
    return conn


def _runs(conn: Any, prefix: str) -> list[dict[str, Any]]:
    """The scheduled runs of DAGs whose id starts with ``prefix``, with their task's times."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT dr.dag_id, dr.logical_date, dr.run_after, dr.queued_at, dr.state, ti.start_date, ti.end_date,"
            " ti.state FROM dag_run dr LEFT JOIN task_instance ti ON ti.dag_id = dr.dag_id AND ti.run_id = dr.run_id"
            " WHERE dr.run_type = 'scheduled' AND dr.dag_id LIKE %s",
            (prefix + "%",),
        )
        names = ("dag_id", "logical_date", "run_after", "queued_at", "state", "start", "end", "ti_state")
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _dag_count(conn: Any, prefix: str) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM dag WHERE dag_id LIKE %s AND NOT is_paused", (prefix + "%",))
        return cur.fetchone()[0]


def _wait_for_burst(conn: Any, prefix: str, expected: int, tick: datetime, timeout: float) -> list[dict[str, Any]]:
    """Wait until ``expected`` runs ended or ``timeout`` seconds after the tick (or STALL_SECONDS
    after the tick without a run created or ended)."""
    last, changed = (-1, -1), time.monotonic()
    while True:
        runs = [r for r in _runs(conn, prefix) if r["logical_date"] == tick]
        done = sum(r["state"] in TERMINAL for r in runs)
        now = datetime.now(UTC)
        if (len(runs), done) != last or now <= tick:  # a stall counts from the tick on
            if (len(runs), done) != last and now > tick:
                print(f"  {(now - tick).total_seconds():6.0f} s after the tick: {len(runs)} runs, {done} ended")
            last, changed = (len(runs), done), time.monotonic()
        if done >= expected:
            return runs
        if (now - tick).total_seconds() > timeout or (now > tick and time.monotonic() - changed > STALL_SECONDS):
            print(f"  gave up: {len(runs)} runs created, {done} of {expected} ended")
            return runs
        time.sleep(2)


STALL_SECONDS = 600
"""Plain Airflow's 1,000 DAGs in one file: its first runs start minutes after the tick."""


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def _figures(runs: list[dict[str, Any]], expected: int, tick: datetime) -> dict[str, Any]:
    def after(moment: datetime | None) -> float | None:
        return None if moment is None else round((moment - tick).total_seconds(), 1)

    ours_tick = [r for r in runs if r["logical_date"] == tick]
    created = [after(r["queued_at"]) for r in ours_tick if r["queued_at"]]
    starts = [after(r["start"]) for r in ours_tick if r["start"]]
    late = [round((r["start"] - r["run_after"]).total_seconds(), 1) for r in ours_tick if r["start"]]
    ends = [after(r["end"]) for r in ours_tick if r["end"]]
    return {
        "expected": expected,
        "runs_for_the_tick": len(ours_tick),
        "lost": expected - len({r["dag_id"] for r in ours_tick}),
        "not_successful": sum(r["state"] != "success" for r in ours_tick),
        "created_over_s": max(created, default=None),
        "start_p50_s": _percentile(starts, 0.5),
        "start_p95_s": _percentile(starts, 0.95),
        "start_after_due_p50_s": _percentile(late, 0.5),
        "start_after_due_p95_s": _percentile(late, 0.95),
        "all_done_s": max(ends, default=None) if len(ends) == expected else None,
        "last_end_s": max(ends, default=None),
        "start_seconds": sorted(s for s in starts if s is not None),
    }


def _spread(starts: list[float], window: int) -> dict[str, Any]:
    """Benchmark (c): the most task starts in any 10 s, and with a window how far the cumulative
    starts stray from even over it (the largest gap between the share of runs started by x and x's
    share of the window: 0 is perfectly even; the goal is 10% at most)."""
    peak = max(
        (sum(1 for s in starts if b <= s < b + 10) for b in range(0, int(max(starts, default=0)) + 1)), default=0
    )
    out: dict[str, Any] = {"peak_starts_in_10_s": peak}
    if window and starts:
        span = window * 60
        shares = sorted(min(max(s / span, 0.0), 1.0) for s in starts)
        n = len(shares)
        out["start_spread_from_even"] = round(max(max((i + 1) / n - x, x - i / n) for i, x in enumerate(shares)), 3)
        out["starts_per_minute"] = [sum(1 for s in starts if m * 60 <= s < (m + 1) * 60) for m in range(window + 1)]
    return out


# -- ours ------------------------------------------------------------------------------------------


def _dataset(runs: int, cron: str, window: int, now: datetime) -> Any:
    from customer_pipelines.seed import Dataset, config_row, customer_rows

    data = Dataset()
    per_customer = -(-runs // CUSTOMERS)
    for c in range(CUSTOMERS):
        customer_id = f"cust_burst_{c:02d}"
        customer, subscription = customer_rows(customer_id, f"{customer_id} Inc", "ENTERPRISE", now=now)
        data.customers.append(customer)
        data.subscriptions.append(subscription)
        for n in range(per_customer):
            if len(data.configs) == runs:
                break
            row = config_row(
                f"daily_{n:03d}", customer_id, f"Daily {n}", "GCP", "COST", "cost_billing", cron, "UTC", now=now
            )
            data.configs.append({**row, "start_window_minutes": window or None})
    return data


def run_ours(runs: int, window: int) -> dict[str, Any]:
    from customer_pipelines.bigquery.store import BigQueryStore
    from customer_pipelines.local import stack as local_stack
    from customer_pipelines.local.stack import run_module
    from customer_pipelines.seed import load_dataset

    settings = _settings("cp-bench-burst-ours-")
    try:
        began = time.monotonic()
        info = local_stack.up(settings, seed_demo=False)
        print(f"ours: stack up in {time.monotonic() - began:.0f} s")
        tick = _tick_after(_lead(runs))
        data = _dataset(runs, f"{tick.minute} {tick.hour} * * *", window, datetime.now(UTC))
        store = BigQueryStore(info.settings)
        load_dataset(store, data)
        run_module(info.env, "sync", timeout=1800)
        conn = _connect(info.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        while _dag_count(conn, "cust_burst_") < runs and datetime.now(UTC) < tick:
            time.sleep(2)
        registered = _dag_count(conn, "cust_burst_")
        ahead = (tick - datetime.now(UTC)).total_seconds()
        print(f"ours: {registered} of {runs} DAGs unpaused {ahead:.0f} s before the tick {tick:%H:%M} UTC")
        profiler = _profile(info, tick, PROFILE) if PROFILE else None
        while datetime.now(UTC) < tick:
            time.sleep(0.2)
        cpu_before = _cpu_by_component(info.settings.state_dir / "run")
        burst = _wait_for_burst(conn, "cust_burst_", runs, tick, timeout=1800 + window * 60)
        cpu_after = _cpu_by_component(info.settings.state_dir / "run")
        if profiler is not None:
            profiler.wait(timeout=600)
        figures = _figures(burst, runs, tick)
        run_module(info.env, "sync", timeout=600)  # delivers anything spooled
        mirrored = store.query(
            "queries/runs_of_customers.sql", {"customer_ids": [c["customer_id"] for c in data.customers]}
        )
        figures["mirrored_terminal"] = sum(
            m["state"] in ("COMPLETED", "FAILED", "SKIPPED", "TIMEOUT") for m in mirrored
        )
        figures["mirrored_with_the_tick"] = sum(m["logical_date"] == tick for m in mirrored)
        figures["registered_before_tick"] = registered
        figures["window_minutes"] = window
        figures.update(_spread(figures["start_seconds"], window))
        figures["cpu_seconds_during_burst"] = _cpu_spent(cpu_before, cpu_after)
        if window:
            from customer_pipelines.models import dag_id_for, start_offset

            figures["offset_seconds"] = sorted(
                start_offset(dag_id_for(c["customer_id"], c["config_id"]), window).total_seconds() for c in data.configs
            )
        figures["settings"] = _airflow_settings(info.env)
        conn.close()
        return figures
    finally:
        local_stack.down(settings)
        shutil.rmtree(settings.state_dir, ignore_errors=True)


PROFILE: Path | None = None
PROFILE_COMPONENT = "airflow-scheduler"
COMPONENTS = (
    "airflow-scheduler",
    "airflow-api-server",
    "airflow-dag-processor",
    "airflow-triggerer",
    "customer-pipelines-syncer",
    "bigquery-emulator",
    "bigquery-emulator-data",
    "airflow-celery-worker-1",
    "airflow-celery-worker-2",
    "redis",
)


def _cpu_by_component(run_dir: Path) -> dict[str, float]:
    """CPU seconds so far of each component's process tree (its tasks included), and PostgreSQL's."""
    from customer_pipelines.local.processes import read_pid

    cpu = {}
    for name in COMPONENTS:
        pid = read_pid(run_dir / f"{name}.pid")
        if pid is not None:
            cpu[name] = tree_cpu_seconds(pid)
    postgres = sum(_own_cpu(p) for p in Path("/proc").iterdir() if p.name.isdigit() and _comm(p) == "postgres")
    cpu["postgres (all servers)"] = postgres
    return cpu


def _cpu_spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """CPU seconds each component spent between two readings of :func:`_cpu_by_component`."""
    return {name: round(after[name] - before[name], 1) for name in before if name in after}


def _comm(proc: Path) -> str:
    try:
        return (proc / "comm").read_text().strip()
    except OSError:
        return ""


def _own_cpu(proc: Path) -> float:
    try:
        fields = (proc / "stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _profile(info: Any, tick: datetime, out: Path) -> Any:
    """py-spy over a component's process tree (the scheduler's: its LocalExecutor workers and every
    task they fork; ``--profile-component``) from the tick for 150 s, in py-spy's raw (collapsed) format."""
    import subprocess

    from customer_pipelines.local.processes import read_pid

    pid = read_pid(info.settings.state_dir / "run" / f"{PROFILE_COMPONENT}.pid")
    while datetime.now(UTC) < tick:
        time.sleep(0.5)
    argv = [str(Path(sys.executable).with_name("py-spy")), "record", "--subprocesses", "--idle", "--rate", "25"]
    argv += ["--format", "raw", "--duration", "150", "--pid", str(pid), "--output", str(out)]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# -- plain Airflow ---------------------------------------------------------------------------------

PLAIN_DAGS = '''
"""{runs} trivial one-task DAGs due at one tick (bench/burst.py)."""
import pendulum
from airflow.sdk import DAG, task
from airflow.timetables.trigger import CronTriggerTimetable

def noop():
    return None

for i in range({runs}):
    with DAG(
        dag_id=f"plain_burst_{{i:04d}}",
        schedule=CronTriggerTimetable("{cron}", timezone="UTC"),
        # now: an earlier start_date gives each DAG a run for yesterday's tick at its first parse
        start_date=pendulum.parse("{created}"),
        catchup=False,
        is_paused_upon_creation=False,
    ) as dag:
        task(noop, task_id="noop")()
    globals()[dag.dag_id] = dag
'''

PLAIN_DAG = '''
"""One of {runs} trivial one-task DAGs due at one tick (bench/burst.py)."""
import pendulum
from airflow.sdk import DAG, task
from airflow.timetables.trigger import CronTriggerTimetable

def noop():
    return None

with DAG(
    dag_id="plain_burst_{i:04d}",
    schedule=CronTriggerTimetable("{cron}", timezone="UTC"),
    start_date=pendulum.parse("{created}"),
    catchup=False,
    is_paused_upon_creation=False,
) as dag:
    task(noop, task_id="noop")()
'''

PLAIN_LAYOUT = "file-per-dag"
"""plain: each DAG in a file of its own (``--plain-layout``; the default since 2026-12-04), or all in
one file (``one-file``: each task then parses every DAG of the burst, which at 1,000 made plain's
tasks, not its scheduler, the pace: an unfair baseline)."""

OUR_OVERRIDES = (
    "AIRFLOW__CORE__PARALLELISM",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL",
    "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL",
    "AIRFLOW__CORE__PLUGINS_FOLDER",
)


@contextmanager
def plain_airflow(runs: int, cron: str) -> Iterator[dict[str, str]]:
    """Airflow with its defaults on the embedded PostgreSQL, the trivial DAGs in its DAGs folder."""
    from customer_pipelines.local import airflow as local_airflow
    from customer_pipelines.local import postgres

    settings = _settings("cp-bench-burst-plain-")
    dags = settings.state_dir / "plain_dags"
    dags.mkdir()
    created = datetime.now(UTC).isoformat()
    if PLAIN_LAYOUT == "one-file":
        (dags / "plain_burst.py").write_text(PLAIN_DAGS.format(runs=runs, cron=cron, created=created))
    else:
        for i in range(runs):
            (dags / f"plain_burst_{i:04d}.py").write_text(PLAIN_DAG.format(runs=runs, i=i, cron=cron, created=created))
    try:
        server = postgres.start(settings)
        url = postgres.ensure_database(server, "plain_airflow")
        env = local_airflow.airflow_env(settings, url)
        # Airflow's own defaults: neither the stack's settings nor its burst settings (until
        # 2026-12-04 the burst settings stayed: plain ran with our scheduler tuning).
        for name in (*OUR_OVERRIDES, *local_airflow.BURST_SETTINGS):
            env.pop(name, None)
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
        env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(settings.state_dir / "no_plugins")
        env["PYTHONPATH"] = ""  # no airflow_local_settings, no package of ours
        local_airflow.migrate(env)
        local_airflow.start(settings, env, components=("api-server", "scheduler", "dag-processor"))
        yield env
    finally:
        local_airflow.stop_all(settings)
        postgres.stop(settings)
        shutil.rmtree(settings.state_dir, ignore_errors=True)


def run_plain(runs: int) -> dict[str, Any]:
    tick = _tick_after(_lead(runs))
    began = time.monotonic()
    with plain_airflow(runs, f"{tick.minute} {tick.hour} * * *") as env:
        print(f"plain: Airflow up in {time.monotonic() - began:.0f} s")
        conn = _connect(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        while _dag_count(conn, "plain_burst_") < runs and datetime.now(UTC) < tick:
            time.sleep(2)
        registered = _dag_count(conn, "plain_burst_")
        ahead = (tick - datetime.now(UTC)).total_seconds()
        print(f"plain: {registered} of {runs} DAGs unpaused {ahead:.0f} s before the tick")
        run_dir = Path(env["AIRFLOW_HOME"]).parent / "run"
        while datetime.now(UTC) < tick:
            time.sleep(0.2)
        cpu_before = _cpu_by_component(run_dir)
        figures = _figures(_wait_for_burst(conn, "plain_burst_", runs, tick, timeout=1800), runs, tick)
        cpu_after = _cpu_by_component(run_dir)
        figures["cpu_seconds_during_burst"] = _cpu_spent(cpu_before, cpu_after)
        figures["registered_before_tick"] = registered
        figures["settings"] = _airflow_settings(env)
        conn.close()
        return figures


# -- the google provider's own operator (benchmark b) -----------------------------------------------

PROVIDER_DAGS = '''
"""__RUNS__ DAGs each running the cost_billing template's MERGE with the google provider's own
BigQueryInsertJobOperator, on the BigQuery emulator (bench/burst.py, variant ``provider``)."""
import pendulum
from airflow.providers.google.cloud.operators.bigquery import BigQueryInsertJobOperator
from airflow.sdk import DAG
from airflow.timetables.trigger import CronTriggerTimetable

SQL = __SQL__


def param(name, kind, value):
    return {"name": name, "parameterType": {"type": kind}, "parameterValue": {"value": value}}


for i in range(__RUNS__):
    customer_id = f"cust_burst_{i % __CUSTOMERS__:02d}"
    with DAG(
        dag_id=f"provider_burst_{i:04d}",
        schedule=CronTriggerTimetable("__CRON__", timezone="UTC"),
        start_date=pendulum.parse("__CREATED__"),
        catchup=False,
        is_paused_upon_creation=False,
    ) as dag:
        BigQueryInsertJobOperator(
            task_id="cost_billing",
            gcp_conn_id="bq_bench",
            project_id="__PROJECT__",
            location="__LOCATION__",
            configuration={
                "query": {
                    "query": SQL,
                    "useLegacySql": False,
                    "parameterMode": "NAMED",
                    "queryParameters": [
                        param("customer_id", "STRING", customer_id),
                        param("provider", "STRING", "GCP"),
                        param("currency", "STRING", "USD"),
                        param("lookback_days", "INT64", "1"),
                        param("run_date", "DATE", "{{ macros.ds_add(ds, -1) }}"),
                        param("run_key", "STRING", "{{ dag.dag_id }}/{{ run_id }}"),
                    ],
                }
            },
        )
    globals()[dag.dag_id] = dag
'''

PROVIDER_LOCAL_SETTINGS = '''
"""The deployment optimisation ours ships (runs/preload.py), for the provider's task: the process
that forks the tasks (the scheduler, LocalExecutor) imports what they import, once."""
import importlib
import sys

if sys.argv[1:2] == ["scheduler"]:
    for name in (
        "airflow.providers.google.cloud.operators.bigquery",
        "airflow.providers.google.cloud.hooks.bigquery",
        "google.cloud.bigquery",
        "airflow.sdk.execution_time.task_runner",
    ):
        importlib.import_module(name)
'''


def run_provider(runs: int) -> dict[str, Any]:
    """Benchmark (b): the template's BigQuery work done by the google provider's own operator, with
    our stack's emulator, PostgreSQL and shipped Airflow settings, without our layer (no quota gate,
    no mirror, no snapshot, no plugin)."""
    from customer_pipelines.bigquery.sql import load_sql
    from customer_pipelines.bigquery.store import split_statements
    from customer_pipelines.local import airflow as local_airflow
    from customer_pipelines.local import stack as local_stack

    settings = _settings("cp-bench-burst-provider-")
    try:
        began = time.monotonic()
        info = local_stack.prepare(settings, seed_demo=False)
        tick = _tick_after(_lead(runs))
        dags = info.settings.state_dir / "provider_dags"
        plugins = info.settings.state_dir / "provider_plugins"
        dags.mkdir()
        plugins.mkdir()
        text = PROVIDER_DAGS
        for key, value in {
            # The template's work, its MERGE; the summary SELECT after it is ours (the mirror's details).
            "__SQL__": repr(split_statements(load_sql("templates/cost_billing.sql", info.settings, "data"))[0]),
            "__RUNS__": str(runs),
            "__CUSTOMERS__": str(CUSTOMERS),
            "__CRON__": f"{tick.minute} {tick.hour} * * *",
            "__CREATED__": datetime.now(UTC).isoformat(),
            "__PROJECT__": info.settings.project_of("data"),
            "__LOCATION__": info.settings.bq_location,
        }.items():
            text = text.replace(key, value)
        (dags / "provider_burst.py").write_text(text)
        (plugins / "airflow_local_settings.py").write_text(PROVIDER_LOCAL_SETTINGS)
        env = dict(info.env)
        env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
        env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(plugins)
        env["PYTHONPATH"] = ""  # not our package (its airflow_local_settings preloads ours)
        # The provider's own way to an emulator: google-cloud-bigquery's BIGQUERY_EMULATOR_HOST and
        # a connection with anonymous credentials, from the environment (no lookup through the API).
        env["BIGQUERY_EMULATOR_HOST"] = info.settings.emulator_url_of("data") or ""
        env["AIRFLOW_CONN_BQ_BENCH"] = json.dumps(
            {
                "conn_type": "google_cloud_platform",
                "extra": {"project": info.settings.project_of("data"), "is_anonymous": True},
            }
        )
        local_airflow.start(info.settings, env, components=("api-server", "scheduler", "dag-processor"))
        print(f"provider: stack up in {time.monotonic() - began:.0f} s")
        conn = _connect(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
        while _dag_count(conn, "provider_burst_") < runs and datetime.now(UTC) < tick:
            time.sleep(2)
        registered = _dag_count(conn, "provider_burst_")
        ahead = (tick - datetime.now(UTC)).total_seconds()
        print(f"provider: {registered} of {runs} DAGs unpaused {ahead:.0f} s before the tick {tick:%H:%M} UTC")
        while datetime.now(UTC) < tick:
            time.sleep(0.2)
        cpu_before = _cpu_by_component(info.settings.state_dir / "run")
        figures = _figures(_wait_for_burst(conn, "provider_burst_", runs, tick, timeout=1800), runs, tick)
        cpu_after = _cpu_by_component(info.settings.state_dir / "run")
        figures["registered_before_tick"] = registered
        figures["cpu_seconds_during_burst"] = _cpu_spent(cpu_before, cpu_after)
        figures["settings"] = _airflow_settings(env)
        conn.close()
        return figures
    finally:
        local_stack.down(settings)
        shutil.rmtree(settings.state_dir, ignore_errors=True)


# -- report ----------------------------------------------------------------------------------------


def _row(name: str, f: dict[str, Any]) -> str:
    def s(value: Any) -> str:
        return "-" if value is None else f"{value:.0f}" if isinstance(value, float) else str(value)

    mirrored = f.get("mirrored_terminal")
    done = f["all_done_s"] if f["all_done_s"] is not None else f["last_end_s"]
    return (
        f"| {name} | {f['expected']} | {s(f['created_over_s'])} | {s(f['start_p50_s'])} | {s(f['start_p95_s'])} "
        f"| {s(done)} | {f['lost']} | {f['not_successful']} "
        f"| {'-' if mirrored is None else mirrored} |"
    )


VARIANTS = ("plain", "ours", "provider")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="200", help="comma-separated burst sizes (e.g. 200,1000)")
    parser.add_argument("--variants", default="plain,ours", help="comma-separated: plain, ours, provider")
    parser.add_argument("--window-minutes", type=int, default=0, help="ours: every config's start window")
    parser.add_argument("--profile", type=Path, help="ours: py-spy's raw profile of the scheduler's tree to this file")
    parser.add_argument(
        "--plain-layout",
        choices=("file-per-dag", "one-file"),
        default="file-per-dag",
        help="plain: a file per DAG (default) or every DAG in one file",
    )
    parser.add_argument(
        "--profile-component", default="airflow-scheduler", help="ours: whose process tree --profile samples"
    )
    parser.add_argument(
        "--executor", choices=("LocalExecutor", "CeleryExecutor"), default="LocalExecutor", help="ours: the executor"
    )
    args = parser.parse_args()
    global PROFILE, PROFILE_COMPONENT, EXECUTOR, PLAIN_LAYOUT
    PLAIN_LAYOUT = args.plain_layout
    PROFILE = args.profile
    PROFILE_COMPONENT = args.profile_component
    EXECUTOR = args.executor
    results: dict[str, Any] = {"started_at": datetime.now(UTC).isoformat(), "cores": os.cpu_count(), "cases": []}
    for runs in (int(n) for n in args.runs.split(",")):
        for variant in args.variants.split(","):
            print(
                f"== {variant}, {runs} runs at one tick"
                + (f", {args.window_minutes}-minute window" if variant == "ours" and args.window_minutes else "")
            )
            if variant not in VARIANTS:
                parser.error(f"--variants: unknown variant {variant!r} (one of {', '.join(VARIANTS)})")
            figures = (
                run_ours(runs, args.window_minutes)
                if variant == "ours"
                else run_plain(runs)
                if variant == "plain"
                else run_provider(runs)
            )
            executor = (
                {"executor": EXECUTOR} if variant == "ours" else {"layout": PLAIN_LAYOUT} if variant == "plain" else {}
            )
            results["cases"].append({"variant": variant, "runs": runs, **executor, **figures})
    print()
    print(
        "| variant | runs | created over s | start p50 s | start p95 s | all done s | lost | not successful "
        "| mirrored terminal |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for case in results["cases"]:
        name = case["variant"] + (f" (window {case['window_minutes']} min)" if case.get("window_minutes") else "")
        print(_row(name, case))
    for case in results["cases"]:
        if case.get("window_minutes"):
            print(
                f"{case['runs']} runs, {case['window_minutes']}-minute window: starts stray "
                f"{case['start_spread_from_even']:.1%} from even (goal 10%); peak {case['peak_starts_in_10_s']} "
                f"starts in 10 s; per minute {case['starts_per_minute']}"
            )
        elif case["variant"] == "ours":
            print(f"{case['runs']} runs, no window: peak {case.get('peak_starts_in_10_s')} starts in 10 s")
    by = {(c["variant"], c["runs"]): c for c in results["cases"]}
    for runs in sorted({c["runs"] for c in results["cases"]}):
        ours = by.get(("ours", runs))
        for other, goal in (("plain", "200: at most 1.0x; 1,000: at most 0.5x"), ("provider", "at most 1.1x")):
            base = by.get((other, runs))
            if base and ours and base["all_done_s"] and ours["all_done_s"] and not base["not_successful"]:
                ratio = ours["all_done_s"] / base["all_done_s"]
                print(f"{runs} runs: ours / {other}, all done: {ratio:.2f}x (goal {goal})")
    RESULTS.mkdir(exist_ok=True)
    name = (
        f"burst-{args.variants.replace(',', '-')}-{args.runs.replace(',', '-')}"
        + (f"-window{args.window_minutes}" if args.window_minutes else "")
        + ("-celery" if EXECUTOR == "CeleryExecutor" else "")
        + ("-plain-one-file" if PLAIN_LAYOUT == "one-file" and "plain" in args.variants else "")
    )
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(results, indent=1, default=str))
    print(f"wrote {out}")


def _stop_on_signal(signum: int, frame: Any) -> None:
    # SIGTERM/SIGINT unwind through the variants' ``finally`` blocks, which take their stack down
    # (a bare SIGTERM killed only this process and left Airflow and its workers running).
    raise SystemExit(f"stopped by signal {signum}")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    sys.exit(main())
