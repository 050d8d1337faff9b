"""Shared by bench/fleet_parse.py and bench/worker_parse.py: a synthetic fleet's config snapshot
(seed.fleet_dataset, written with snapshot.write_snapshot as a refresh would), and the environment
an Airflow process of this deployment parses DAG files in (PYTHONPATH=plugins, its plugins folder,
its DAGs folder, CP_SNAPSHOT_PATH)."""

from __future__ import annotations

import math
import os
import resource
import sqlite3
import statistics
import time
from pathlib import Path
from typing import Any

from customer_pipelines.seed import snapshot_customer_rows

REPO = Path(__file__).resolve().parents[1]
DAGS_DIR = REPO / "dags"
PLUGINS_DIR = REPO / "plugins"
WORK_DIR = Path("/var/tmp/cp-fleetbench")
"""Snapshots and Airflow's home of the benchmarks (outside the repo; reused between runs)."""


customer_rows = snapshot_customer_rows
"""Customers as the snapshot holds them (one shaping for the benches and the tests)."""


def rss_mb() -> float:
    """Peak resident set size of this process so far: Linux's VmHWM, the high-water mark of this
    program's own memory. Not ru_maxrss, which a child started by fork and exec inherits from the
    parent it was forked from (a benchmark's parent holding 50,000 DAGs gave every child its 1.8 GB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def snapshot_count(path: Path) -> int | None:
    """Configs in an existing snapshot, or None when there is none (or it is unreadable)."""
    if not path.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM configs").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.DatabaseError:
        return None


def ensure_snapshot(configs: int, *, rewrite: bool = False) -> tuple[Path, dict[str, Any]]:
    """The snapshot of a synthetic fleet of about ``configs`` configs: ``fleet_dataset`` with one
    customer per 5 configs (it gives 2-8 each, 5 on average), so 50,000 asks fleet_dataset(10_000).
    Written once (not timed by the callers) and reused while its file is there."""
    from customer_pipelines import seed
    from customer_pipelines.snapshot import write_snapshot

    customers = max(1, math.ceil(configs / 5))
    path = WORK_DIR / f"fleet-{customers}c" / "configs.sqlite"
    info: dict[str, Any] = {"path": str(path), "customers": customers, "seed": 7}
    count = None if rewrite else snapshot_count(path)
    if count is None:
        began = time.perf_counter()
        dataset = seed.fleet_dataset(customers, seed=7)
        write_snapshot(path, customer_rows(dataset), dataset.configs, source=f"bench:fleet_dataset({customers})")
        info["written_s"] = round(time.perf_counter() - began, 1)
        count = snapshot_count(path)
    info["configs"] = count
    info["size_mb"] = round(path.stat().st_size / 1e6, 1)
    return path, info


def airflow_env(snapshot: Path, shards: int, **extra: str) -> dict[str, str]:
    """A child process's environment: this deployment's plugins and DAGs folders, the bench's own
    Airflow home (no ~/airflow, no database: parsing needs none), the snapshot and shard count."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not (k.startswith(("CP_", "AIRFLOW", "_AIRFLOW_PARSING_CONTEXT")) or k == "BIGQUERY_EMULATOR_HOST")
    }
    home = WORK_DIR / "airflow-home"
    home.mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "PYTHONPATH": str(PLUGINS_DIR),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_DIR),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PLUGINS_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "CP_STATE_DIR": str(WORK_DIR / "state"),
            "CP_SNAPSHOT_PATH": str(snapshot),
            "CP_FLEET_SHARDS": str(shards),
        }
    )
    env.update(extra)
    return env


def quick_check_s(path: Path, repeats: int = 5) -> list[float]:
    """``PRAGMA quick_check`` alone on the snapshot, as Snapshot() runs it on each open (a fresh
    read-only connection each time; the file is in the page cache after the first)."""
    timings = []
    for _ in range(repeats):
        began = time.perf_counter()
        conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
        try:
            result = conn.execute("PRAGMA quick_check").fetchone()
        finally:
            conn.close()
        timings.append(time.perf_counter() - began)
        if result[0] != "ok":
            raise RuntimeError(f"{path}: quick_check {result}")
    return timings


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by the nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def med(values: list[float]) -> float:
    return statistics.median(values)
