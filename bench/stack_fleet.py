"""Shared by the fleet benchmarks (fleet_idle.py, change_latency.py): the local stack on free ports
with a synthetic fleet of inactive configs, its metadata database, and the CPU of a process tree.

Every config of the fleet is loaded with ``is_active=False``: every DAG is built (paused) and no run
starts, so what the stack does is the fleet's upkeep alone (parsing, the syncer's rounds)."""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

CONFIGS_PER_CUSTOMER = 5
"""fleet_dataset's mean (2 to 8 configs per customer)."""
METADATA_TABLES = ("dag", "serialized_dag", "dag_version", "dag_code", "dag_tag", "import_error")
SYNCER_LOG = "customer-pipelines-syncer.log"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def inactive_fleet(configs: int, seed: int) -> Any:
    """fleet_dataset of ``configs // 5`` customers (about ``configs`` configs), every config inactive."""
    from customer_pipelines.seed import fleet_dataset

    data = fleet_dataset(max(1, configs // CONFIGS_PER_CUSTOMER), seed=seed)
    for row in data.configs:
        row["is_active"] = False
    return data


@contextmanager
def fleet_stack(data: Any, *, sync_interval: int = 60, prefix: str = "cp-bench-fleet-") -> Iterator[tuple[Any, float]]:
    """The local stack (no demo) on free ports in a temporary state directory, with ``data`` loaded
    into the emulator and synced once (the snapshot holds the fleet, the shards' parse is asked for);
    yields (StackInfo, monotonic time that sync ended). The stack is always stopped afterwards,
    also after a failed start."""
    from customer_pipelines.bigquery.store import BigQueryStore
    from customer_pipelines.local import stack as local_stack
    from customer_pipelines.local.stack import run_module
    from customer_pipelines.seed import load_dataset
    from customer_pipelines.settings import Settings

    state = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    state.chmod(0o700)
    settings = Settings(
        state_dir=state,
        emulator_port=free_port(),
        emulator_grpc_port=free_port(),
        airflow_port=free_port(),
        bq_project="bench-project",
        sync_interval_seconds=sync_interval,
    )
    try:
        began = time.monotonic()
        info = local_stack.up(settings, seed_demo=False)
        print(f"stack up in {time.monotonic() - began:.0f} s")
        began = time.monotonic()
        load_dataset(BigQueryStore(info.settings), data)
        loaded = time.monotonic() - began
        print(f"{len(data.configs)} configs ({len(data.customers)} customers) loaded in {loaded:.0f} s")
        began = time.monotonic()
        print(run_module(info.env, "sync", timeout=1800).strip().splitlines()[-1])
        synced = time.monotonic()
        print(f"first fleet sync in {synced - began:.0f} s")
        yield info, synced
    finally:
        local_stack.down(settings)
        shutil.rmtree(state, ignore_errors=True)


def metadata(info: Any) -> Any:
    """An autocommit connection to Airflow's metadata database of the stack."""
    import psycopg2

    url = info.env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].replace("postgresql+psycopg2://", "postgresql://")
    conn = psycopg2.connect(url)
    conn.autocommit = True
    return conn


def scalar(conn: Any, sql: str, params: tuple = ()) -> Any:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchone()[0]


def fleet_dag_count(conn: Any) -> int:
    from customer_pipelines.fleet.shards import SHARD_DIR

    return scalar(conn, "SELECT count(*) FROM dag WHERE relative_fileloc LIKE %s", (f"{SHARD_DIR}/%",))


def parsed_at(conn: Any) -> dict[str, datetime]:
    """Shard file -> when the DAG processor last parsed it (the newest last_parsed_time of its DAGs)."""
    from customer_pipelines.fleet.shards import SHARD_DIR

    with conn.cursor() as cur:
        cur.execute(
            "SELECT relative_fileloc, max(last_parsed_time) FROM dag WHERE relative_fileloc LIKE %s GROUP BY 1",
            (f"{SHARD_DIR}/%",),
        )
        return dict(cur.fetchall())


def wait_for_dags(
    conn: Any, expected: int, timeout: float, *, stall: float | None = None, every: float = 10
) -> tuple[float | None, int, list]:
    """Wait until the fleet's ``expected`` DAGs are in the ``dag`` table, at most ``timeout`` seconds,
    or ``stall`` seconds without a new DAG (shard files starved: parse requests for files already
    parsed keep coming first); returns (seconds, or None when not all came, DAGs seen,
    [(seconds, DAGs)] progress)."""
    began = time.monotonic()
    progress: list[tuple[float, int]] = []
    last, changed = -1, began
    while True:
        count = fleet_dag_count(conn)
        now = time.monotonic()
        elapsed = now - began
        if count != last:
            progress.append((round(elapsed, 1), count))
            print(f"  {elapsed:6.0f} s: {count} of {expected} DAGs")
            last, changed = count, now
        if count >= expected:
            return elapsed, count, progress
        if elapsed > timeout or (stall is not None and now - changed > stall):
            print(
                f"  {elapsed:6.0f} s: gave up waiting, {count} of {expected} DAGs "
                f"({now - changed:.0f} s without a new one)"
            )
            return None, count, progress
        time.sleep(every)


def table_sizes(conn: Any) -> dict[str, dict[str, int]]:
    sizes = {}
    with conn.cursor() as cur:
        for table in METADATA_TABLES:
            cur.execute(f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}")  # fixed table names
            rows, size = cur.fetchone()
            sizes[table] = {"rows": rows, "bytes": size}
    return sizes


def run_pid(info: Any, name: str) -> int:
    from customer_pipelines.local.processes import read_pid

    pid = read_pid(info.settings.state_dir / "run" / f"{name}.pid")
    if pid is None:
        raise RuntimeError(f"{name} is not running")
    return pid


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def tree_cpu_seconds(root: int) -> float:
    """CPU (user + system) of ``root`` and every live descendant, plus what their children that have
    ended and were waited for used (cutime + cstime): the difference of two readings is the tree's
    CPU in between, short-lived children (a DAG processor's file parsers) included."""
    parent: dict[int, int] = {}
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                stats[int(entry)] = fields
                parent[int(entry)] = int(fields[1])  # ppid: field 4 of proc(5); fields here start at 3
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, pp in parent.items() if pp == pid and p not in tree]
        tree.update(children)
        frontier += children
    ticks = 0
    for pid in tree:
        fields = stats.get(pid)
        if fields is not None:  # utime, stime, cutime, cstime: fields 14-17 of proc(5)
            ticks += sum(int(f) for f in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


_ASKED = re.compile(r"parse asked for (\d+) file")


def syncer_log_offset(info: Any) -> int:
    path = info.settings.state_dir / "run" / SYNCER_LOG
    return path.stat().st_size if path.exists() else 0


def syncer_rounds_since(info: Any, offset: int) -> tuple[int, int]:
    """(sync rounds, DAG files they asked to parse) in the syncer's log after ``offset``."""
    path = info.settings.state_dir / "run" / SYNCER_LOG
    with open(path, "rb") as fh:
        fh.seek(offset)
        text = fh.read().decode(errors="replace")
    asked = [int(n) for n in _ASKED.findall(text)]
    return len(asked), sum(asked)
