"""Benchmark: what a worker pays to parse the one DAG its task needs (issue 22).

With the same synthetic fleet snapshot as bench/fleet_parse.py (about 50,000 configs), for ~20
DAG ids each in a fresh Python process as Airflow's task runner does (task_runner.startup/parse):
Airflow's modules and the plugins loaded first (the listener manager, before the parse), then, with
the parsing context set (``_AIRFLOW_PARSING_CONTEXT_DAG_ID`` / ``_TASK_ID``), the DAG's shard file
through ``BundleDagBag(safe_mode=False, load_op_links=False)``. Prints median/p90/max of the DAG
file's own work (register_shard, from the file's start to its end: snapshot open, one indexed row,
one DAG built; goal <= 50 ms) with its parts, of Airflow's whole file parse, and of the imports and
interpreter start; checks the file defined exactly the one DAG. Also times ``PRAGMA quick_check``
alone (what a Snapshot() open paid before the check ran once per file); writes bench/results/worker_parse.json.

    PYTHONPATH=plugins .venv/bin/python bench/worker_parse.py [--configs 50000] [--dags 20] [--shards 16]
"""

from __future__ import annotations

import time

_STARTED = time.time()  # first thing a child runs: interpreter start ends here

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from fleet_snapshot import DAGS_DIR, airflow_env, ensure_snapshot, med, pct, quick_check_s  # noqa: E402

RESULT_MARK = "WORKER_PARSE_RESULT "
PARTS = ("settings", "parsing_context", "snapshot_open", "config_row", "parse_config", "customer_row", "build_dag")


def child(shard_file: str, dag_id: str) -> dict[str, Any]:
    """The task runner's parse of one DAG in this (fresh) process."""
    t = time.perf_counter()
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.sdk.execution_time import task_runner  # noqa: F401 - what the task process imports

    airflow_imports = time.perf_counter() - t
    t = time.perf_counter()
    # task_runner.startup() calls the listener manager's on_starting before parse(): it loads the
    # plugins, so our plugin's modules are imported before the DAG file runs.
    from airflow.sdk.listener import get_listener_manager

    get_listener_manager()
    plugin_load = time.perf_counter() - t
    preloaded = {m for m in sys.modules if m.startswith("customer_pipelines")}

    # Time the file's own work and its parts, around the very functions the factory calls.
    import customer_pipelines.fleet.factory as factory
    import customer_pipelines.fleet.shards as shards_module
    import customer_pipelines.settings as settings_module
    from customer_pipelines.snapshot import Snapshot

    factory_import = time.perf_counter() - t - plugin_load
    parts: dict[str, float] = dict.fromkeys(("file_work", *PARTS), 0.0)

    def timed(name: str, fn: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                parts[name] += time.perf_counter() - began

        return wrapper

    open_last_good = Snapshot.open_last_good
    Snapshot.open_last_good = classmethod(timed("snapshot_open", open_last_good.__func__))  # type: ignore[method-assign]
    Snapshot.config_by_dag_id = timed("config_row", Snapshot.config_by_dag_id)  # type: ignore[method-assign]
    Snapshot.customer = timed("customer_row", Snapshot.customer)  # type: ignore[method-assign]
    factory.build_dag = timed("build_dag", factory.build_dag)
    factory.parse_config = timed("parse_config", factory.parse_config)
    factory.get_parsing_context = timed("parsing_context", factory.get_parsing_context)
    settings_module.get_parse_settings = timed("settings", settings_module.get_parse_settings)  # register_shard's
    shards_module.register_shard = timed("file_work", shards_module.register_shard)

    t = time.perf_counter()
    bag = BundleDagBag(
        dag_folder=shard_file,
        safe_mode=False,
        load_op_links=False,
        bundle_path=DAGS_DIR,
        bundle_name="dags-folder",
    )
    dagbag = time.perf_counter() - t
    file_work = parts.pop("file_work")

    # The file's module: exactly one DAG object in its namespace, the task's.
    from airflow.sdk import DAG

    modules = [m for m in sys.modules.values() if getattr(m, "__file__", None) == shard_file]
    in_namespace = sorted(v.dag_id for m in modules for v in vars(m).values() if isinstance(v, DAG))
    dag = bag.dags.get(dag_id)

    # The snapshot open without its whole-file check (as once a generation is checked), warm.
    settings_path = Path(os.environ["CP_SNAPSHOT_PATH"])
    t = time.perf_counter()
    Snapshot(settings_path, checked=True).close()
    open_unchecked = time.perf_counter() - t
    t = time.perf_counter()
    conn = sqlite3.connect(f"file:{settings_path}?mode=ro&immutable=1", uri=True)
    conn.execute("PRAGMA quick_check").fetchone()
    conn.close()
    quick_check = time.perf_counter() - t

    return {
        "dag_id": dag_id,
        "file": os.path.relpath(shard_file, DAGS_DIR),
        "interpreter_started_at": _STARTED,
        "airflow_imports_s": round(airflow_imports, 4),
        "plugin_load_s": round(plugin_load, 4),
        "factory_preloaded": "customer_pipelines.fleet.factory" in preloaded,
        "factory_import_s": round(factory_import, 4),
        "file_work_ms": round(file_work * 1000, 2),
        **{f"{name}_ms": round(parts[name] * 1000, 2) for name in PARTS},
        "other_ms": round((file_work - sum(parts.values())) * 1000, 2),
        "dagbag_ms": round(dagbag * 1000, 2),
        "open_unchecked_warm_ms": round(open_unchecked * 1000, 2),
        "quick_check_warm_ms": round(quick_check * 1000, 2),
        "dags_in_bag": sorted(bag.dags),
        "dags_in_namespace": in_namespace,
        "one_dag": sorted(bag.dags) == [dag_id] and in_namespace == [dag_id],
        "has_task": dag is not None and "run_pipeline" in dag.task_dict,
        "import_errors": {k: v[-300:] for k, v in bag.import_errors.items()},
    }


def run_one(dag_id: str, shards: int, snapshot: Path, timeout: float) -> dict[str, Any]:
    from customer_pipelines.fleet.shards import shard_of

    shard_file = str(DAGS_DIR / "customer_pipelines_fleet" / f"shard_{shard_of(dag_id, shards):02d}.py")
    env = airflow_env(
        snapshot,
        shards,
        _AIRFLOW_PARSING_CONTEXT_DAG_ID=dag_id,
        _AIRFLOW_PARSING_CONTEXT_TASK_ID="run_pipeline",
    )
    spawned = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", shard_file, dag_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.time() - spawned
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{dag_id}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    row = json.loads(lines[-1][len(RESULT_MARK) :])
    row["interpreter_start_s"] = round(row.pop("interpreter_started_at") - spawned, 4)
    row["process_wall_s"] = round(wall, 3)
    row["loadavg_1m"] = os.getloadavg()[0]
    return row


def sample_dag_ids(snapshot: Path, count: int) -> list[str]:
    conn = sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True)
    try:
        dag_ids = [d for (d,) in conn.execute("SELECT dag_id FROM configs WHERE dag_id IS NOT NULL ORDER BY dag_id")]
    finally:
        conn.close()
    return random.Random(22).sample(dag_ids, min(count, len(dag_ids)))


def stats(values: list[float]) -> dict[str, float]:
    return {"median": round(med(values), 3), "p90": round(pct(values, 0.9), 3), "max": round(max(values), 3)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", type=int, default=50_000, help="fleet size (about; 5 configs per customer)")
    parser.add_argument("--dags", type=int, default=20, help="DAG ids, each parsed in a fresh process")
    parser.add_argument("--shards", type=int, default=16, help="CP_FLEET_SHARDS")
    parser.add_argument("--timeout", type=float, default=120, help="per process")
    parser.add_argument("--rewrite", action="store_true", help="write the snapshot again even if present")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "worker_parse.json"))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(RESULT_MARK + json.dumps(child(*args.child)), flush=True)
        return

    snapshot, info = ensure_snapshot(args.configs, rewrite=args.rewrite)
    print(f"snapshot {info['path']}: {info['configs']} configs, {info['customers']} customers, {info['size_mb']} MB")
    checks = quick_check_s(snapshot, repeats=7)
    print(
        f"PRAGMA quick_check alone on it: median {med(checks) * 1000:.1f} ms, max {max(checks) * 1000:.1f} ms "
        f"({len(checks)} fresh connections; the first {checks[0] * 1000:.1f} ms)"
    )
    rows = []
    for dag_id in sample_dag_ids(snapshot, args.dags):
        row = run_one(dag_id, args.shards, snapshot, args.timeout)
        rows.append(row)
        print(
            f"  {dag_id} ({row['file']}): file {row['file_work_ms']:.1f} ms ("
            + ", ".join(f"{p} {row[p + '_ms']:.1f}" for p in (*PARTS, "other"))
            + "), "
            f"DagBag {row['dagbag_ms']:.1f} ms, imports {row['airflow_imports_s']:.2f}+{row['plugin_load_s']:.2f}"
            f"+{row['factory_import_s']:.2f}s, start {row['interpreter_start_s']:.2f}s"
            + ("" if row["one_dag"] and row["has_task"] else f"  NOT ONE DAG: {row['dags_in_namespace']}"),
            flush=True,
        )

    ms = {
        name: stats([r[name] for r in rows])
        for name in (
            "file_work_ms",
            *(f"{p}_ms" for p in PARTS),
            "other_ms",
            "dagbag_ms",
            "open_unchecked_warm_ms",
            "quick_check_warm_ms",
        )
    }
    secs = {
        name: stats([r[name] for r in rows])
        for name in ("airflow_imports_s", "plugin_load_s", "factory_import_s", "interpreter_start_s", "process_wall_s")
    }
    results = {
        "snapshot": info,
        "shards": args.shards,
        "machine_cpus": os.cpu_count(),
        "dag_ids": len(rows),
        "all_one_dag": all(r["one_dag"] and r["has_task"] for r in rows),
        "quick_check_alone_ms": {"median": round(med(checks) * 1000, 2), "max": round(max(checks) * 1000, 2)},
        "ms": ms,
        "s": secs,
        "within_50ms_goal": ms["file_work_ms"]["max"] <= 50,
        "per_dag": rows,
    }
    print()
    print(f"{len(rows)} DAG ids, fresh process each, {info['configs']} configs, {args.shards} shards")
    print(f"{'':<38}{'median':>9}{'p90':>9}{'max':>9}")
    labels = {
        "file_work_ms": "DAG file's own work (ms)",
        "settings_ms": "  ParseSettings from the env (ms)",
        "parsing_context_ms": "  Airflow's parsing context (ms)",
        "snapshot_open_ms": "  snapshot open, checked once per file (ms)",
        "config_row_ms": "  config row by dag id (ms)",
        "parse_config_ms": "  parse_config, the row validated (ms)",
        "customer_row_ms": "  customer row (ms)",
        "build_dag_ms": "  build the DAG (ms)",
        "other_ms": "  the rest (ms)",
        "dagbag_ms": "Airflow's BundleDagBag of the file (ms)",
        "open_unchecked_warm_ms": "snapshot open without check, warm (ms)",
        "quick_check_warm_ms": "PRAGMA quick_check alone, warm (ms)",
    }
    for name, label in labels.items():
        s = ms[name]
        print(f"{label:<38}{s['median']:>9.2f}{s['p90']:>9.2f}{s['max']:>9.2f}")
    for name, label in {
        "interpreter_start_s": "interpreter start (s)",
        "airflow_imports_s": "Airflow imports (s)",
        "plugin_load_s": "plugins loaded (s)",
        "factory_import_s": "factory import, after plugins (s)",
        "process_wall_s": "whole process (s)",
    }.items():
        s = secs[name]
        print(f"{label:<38}{s['median']:>9.3f}{s['p90']:>9.3f}{s['max']:>9.3f}")
    print(f"every process built exactly its one DAG: {results['all_one_dag']}")
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
