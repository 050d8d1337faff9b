"""Helpers shared by the test folders."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ZOMBIE_AFTER_SECONDS = 30
"""The e2e stack's [scheduler] task_instance_heartbeat_timeout (Airflow's default: 300)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def running_stack(settings: Any, env: dict[str, str]) -> Iterator[tuple[Any, Any]]:
    """A local stack up with ``env`` exported while it starts, as (StackInfo, admin client); at exit it
    is taken down, its services' logs copied under ``$CP_TEST_KEEP_LOGS`` when set (e.g. to read why
    a run never started), and its state directory removed."""
    import pytest

    from customer_pipelines.local import stack as local_stack
    from customer_pipelines.local.airflow import client as stack_client

    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        info = local_stack.up(settings)
    state = info.settings.state_dir
    try:
        yield info, stack_client(info.settings)
    finally:
        local_stack.down(info.settings)
        keep = os.environ.get("CP_TEST_KEEP_LOGS")
        if keep:
            shutil.copytree(state / "run", Path(keep) / state.name, ignore=shutil.ignore_patterns("*.pid", "*.sock"))
        shutil.rmtree(state, ignore_errors=True)


def stack_pids(state_dir: Path) -> set[int]:
    """The processes a stack started (its pid files, the embedded PostgreSQL's postmaster.pid) and all
    their descendants."""
    from customer_pipelines.local.processes import descends_from, read_pid

    roots = {pid for f in (state_dir / "run").glob("*.pid") if (pid := read_pid(f)) is not None}
    postmaster = state_dir / "postgres" / "postmaster.pid"
    if postmaster.exists():
        roots.add(int(postmaster.read_text().split()[0]))
    everyone = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return {pid for pid in everyone if any(descends_from(pid, root) for root in roots)}


def eventually(check: Any, timeout: float = 60) -> Any:
    """``check()``'s first truthy value within ``timeout`` seconds (asked each second), else its last."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(1)


def mirrored_events(store: Any, dag_id: str, run_id: str) -> list[dict]:
    """The run-state mirror's events of one run, oldest first."""
    return store.query("queries/runs_of_dag_run.sql", {"dag_id": dag_id, "run_id": run_id})


@contextlib.contextmanager
def held_quota_gate(info: Any, customer_id: str) -> Iterator[None]:
    """Hold the customer's quota gate: a task then waits inside execute, like a long pipeline."""
    import psycopg2

    gate = psycopg2.connect(info.settings.quota_db_url)
    try:
        with gate.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cp_quota:{customer_id}",))
        yield
    finally:
        gate.rollback()
        gate.close()


def task_process(ti_id: str) -> int | None:
    """The task process titles itself 'airflow worker -- <ti id>' (Airflow 3's task runner)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if f"airflow worker -- {ti_id}" in cmdline:
            return int(proc.name)
    return None


def service_state_dir(prefix: str) -> Path:
    """A state directory under /var/tmp (0700, as the stack wants it): the embedded PostgreSQL runs
    as its own user when the tests run as root, and the stack grants that user traversal of the state
    directory (0710, its group), which pytest's tmp dirs under /tmp/pytest-of-root (0700) would deny."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))


def add_customer(info, customer_id: str, plan: str, configs: list[tuple[str, int]], config_fields=None, **limits):
    """Load a customer with one config per (config_id, priority) into BigQuery and sync Airflow;
    returns the DAG ids."""
    from datetime import UTC, datetime

    from customer_pipelines.bigquery.store import BigQueryStore
    from customer_pipelines.local.stack import run_module
    from customer_pipelines.seed import Dataset, config_row, customer_rows, load_dataset

    now = datetime.now(UTC)
    customer, subscription = customer_rows(customer_id, f"{customer_id} Inc", plan, now=now)
    subscription.update(limits)
    rows = [
        {
            **config_row(
                config_id,
                customer_id,
                config_id,
                "GCP",
                "COST",
                "cost_billing",
                "0 2 * * *",
                "UTC",
                priority=priority,
                now=now,
            ),
            **(config_fields or {}),
        }
        for config_id, priority in configs
    ]
    load_dataset(
        BigQueryStore(info.settings), Dataset(customers=[customer], subscriptions=[subscription], configs=rows)
    )
    run_module(info.env, "sync")
    return [f"{customer_id}.{config_id}" for config_id, _ in configs]


def rows_of_customer(store, name: str, customer_id: str, where: str = "") -> list[dict]:
    """The rows of one customer in a control-plane table or view, as dicts (``where`` adds
    ``AND …`` conditions written by the test itself)."""
    table = f"`{store.settings.bq_project}.{store.settings.bq_dataset}.{name}`"
    sql = f"SELECT * FROM {table} WHERE customer_id = '{customer_id}' {where}"
    return [dict(r.items()) for r in store.client.query(sql).result()]


def onboard(api: Any, customer_id: str, plan: str = "PROFESSIONAL", **fields: Any) -> dict[str, Any]:
    response = api.admin(
        "POST",
        "/customers",
        json={"customer_id": customer_id, "company_name": f"{customer_id} Inc", "plan": plan, **fields},
    )
    assert response.status_code == 201, response.text
    return response.json()


def config_body(config_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "config_id": config_id,
        "provider": "GCP",
        "domain": "COST",
        "pipeline_template": "cost_billing",
        "schedule_cron": "0 2 * * *",
        "timezone": "UTC",
        **fields,
    }


FLEET_DIR = Path(__file__).resolve().parents[1] / "dags" / "customer_pipelines_fleet"
"""The fleet's shard files (plugins/customer_pipelines/fleet/shards.py)."""


def run_fleet_files(run_name: str = "unit_test_fleet") -> dict[str, Any]:
    """Every shard file run as Airflow runs a DAG file; the DAGs they define together (a DAG defined
    by two files fails the test: a config belongs to one shard)."""
    import runpy

    from airflow.sdk import DAG

    dags: dict[str, Any] = {}
    for shard_file in sorted(FLEET_DIR.glob("shard_*.py")):
        namespace = runpy.run_path(str(shard_file), run_name=run_name)
        for name, value in namespace.items():
            if isinstance(value, DAG):
                assert name not in dags, f"{name} is defined by two shard files"
                dags[name] = value
    return dags


def one_tick_dataset(
    customers: list[str], configs_per_customer: int, cron: str, now: Any, *, config_prefix: str, **fields: Any
) -> Any:
    """ENTERPRISE customers with ``configs_per_customer`` cost_billing configs each, all on ``cron``
    in UTC (a burst at one tick); ``fields`` are set on every config row (a start window, say)."""
    from customer_pipelines.seed import Dataset, config_row, customer_rows

    data = Dataset()
    for customer_id in customers:
        customer, subscription = customer_rows(customer_id, f"{customer_id} Inc", "ENTERPRISE", now=now)
        data.customers.append(customer)
        data.subscriptions.append(subscription)
        for n in range(configs_per_customer):
            row = config_row(
                f"{config_prefix}_{n}",
                customer_id,
                f"{config_prefix} {n}",
                "GCP",
                "COST",
                "cost_billing",
                cron,
                "UTC",
                now=now,
            )
            data.configs.append({**row, **fields})
    return data
