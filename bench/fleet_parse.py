"""Benchmark: parsing the fleet's shard files as Airflow's DAG processor does (issue 22).

Writes (once, not timed; reused from /var/tmp/cp-fleetbench) the snapshot of a synthetic fleet of
about 50,000 configs, then for each shard count parses every shard file in a fresh Python process,
as the DAG processor's parser processes do: Airflow's modules and the plugins loaded first (timed
apart, as the imports), then the file through ``BundleDagBag`` (what processor._parse_file builds),
then its DAGs serialised by ``processor._serialize_dags`` (DagSerialization.to_dict and
LazyDeserializedDAG per DAG) and the result encoded as the message the parser sends its manager.
Prints, per shard count, the slowest shard's parse + serialise (goal <= 10 s, a third of the 30 s
``dagbag_import_timeout``), the median, the sum over all shards, the slowest's peak RSS and the DAGs
per shard; writes bench/results/fleet_parse.json.

    PYTHONPATH=plugins .venv/bin/python bench/fleet_parse.py [--configs 50000] [--shards 16,32]
    PYTHONPATH=plugins .venv/bin/python bench/fleet_parse.py --configs 5000 --shards 1   # one file
"""

from __future__ import annotations

import time

_STARTED = time.time()  # first thing a child runs: interpreter start ends here

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from fleet_snapshot import DAGS_DIR, airflow_env, ensure_snapshot, med, rss_mb  # noqa: E402

RESULT_MARK = "FLEET_PARSE_RESULT "


def child(shard_file: str) -> dict[str, Any]:
    """One shard file's parse in this (fresh) process, as a DAG processor's parser process."""
    t = time.perf_counter()
    # What a parser process holds before it reads the file: Airflow's DAG processing modules (the
    # manager imported them before forking it) and the plugins (our timetable must be registered
    # for the DAGs to serialise; the manager loads plugins on first use, before its parsers fork).
    import structlog
    from airflow.dag_processing.dagbag import BundleDagBag
    from airflow.dag_processing.processor import DagFileParsingResult, _serialize_dags
    from airflow.sdk.execution_time.comms import _RequestFrame

    airflow_imports = time.perf_counter() - t
    t = time.perf_counter()
    from airflow import plugins_manager

    plugins_manager.ensure_plugins_loaded()
    plugins = [p.name for p in plugins_manager._get_plugins()[0]]
    plugin_load = time.perf_counter() - t
    preloaded_cp = sorted(m for m in sys.modules if m.startswith("customer_pipelines"))
    gc.freeze()  # as the DAG processor's manager does before it forks a parser (manager.before_run)
    rss_before = rss_mb()

    # The file's own work (register_shard: snapshot open, the shard's rows, its DAGs), inside the
    # DagBag's import of the file.
    import customer_pipelines.fleet.shards as shards_module

    file_work: list[float] = []
    register = shards_module.register_shard

    def timed_register(namespace: Any, file: str) -> None:
        began = time.perf_counter()
        try:
            register(namespace, file)
        finally:
            file_work.append(time.perf_counter() - began)

    shards_module.register_shard = timed_register

    t, c = time.perf_counter(), time.process_time()
    bag = BundleDagBag(
        dag_folder=shard_file,
        bundle_path=DAGS_DIR,
        bundle_name="dags-folder",
        load_op_links=False,
        safe_mode=False,
    )
    parse, parse_cpu = time.perf_counter() - t, time.process_time() - c

    t, c = time.perf_counter(), time.process_time()
    serialized, serialization_errors = _serialize_dags(bag, structlog.get_logger("bench"))
    serialise, serialise_cpu = time.perf_counter() - t, time.process_time() - c

    # The message the parser process sends its manager (comms.CommsDecoder.send): encoded, not sent.
    t = time.perf_counter()
    bag.import_errors.update(serialization_errors)
    result = DagFileParsingResult(fileloc=shard_file, serialized_dags=serialized, import_errors=bag.import_errors)
    frame = _RequestFrame(id=0, body=result.model_dump(), context_carrier=None).as_bytes()
    encode = time.perf_counter() - t

    return {
        "file": os.path.relpath(shard_file, DAGS_DIR),
        "interpreter_started_at": _STARTED,
        "airflow_imports_s": round(airflow_imports, 3),
        "plugin_load_s": round(plugin_load, 3),
        "plugins": plugins,
        "customer_pipelines_modules_preloaded": len(preloaded_cp),
        "factory_preloaded": "customer_pipelines.fleet.factory" in preloaded_cp,
        "parse_s": round(parse, 3),
        "file_work_s": round(sum(file_work), 3),
        "serialise_s": round(serialise, 3),
        "parse_serialise_s": round(parse + serialise, 3),
        # CPU seconds of this process (user + system): what the work costs without the other
        # processes of a shared machine; the wall figures above are what Airflow's timeouts see.
        "parse_cpu_s": round(parse_cpu, 3),
        "serialise_cpu_s": round(serialise_cpu, 3),
        "parse_serialise_cpu_s": round(parse_cpu + serialise_cpu, 3),
        "encode_s": round(encode, 3),
        "message_mb": round(len(frame) / 1e6, 2),
        "dags": len(bag.dags),
        "serialized": len(serialized),
        "import_errors": {k: v[-300:] for k, v in bag.import_errors.items()},
        "rss_before_parse_mb": round(rss_before, 1),
        "peak_rss_mb": round(rss_mb(), 1),
    }


def run_shard(index: int, shards: int, env: dict[str, str], timeout: float) -> dict[str, Any]:
    shard_file = str(DAGS_DIR / "customer_pipelines_fleet" / f"shard_{index:02d}.py")
    spawned = time.time()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", shard_file],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    wall = time.time() - spawned
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"shard {index}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    row = json.loads(lines[-1][len(RESULT_MARK) :])
    row["interpreter_start_s"] = round(row.pop("interpreter_started_at") - spawned, 3)
    row["process_wall_s"] = round(wall, 3)
    row["loadavg_1m"] = os.getloadavg()[0]  # the machine is shared: how busy it was
    return row


def shard_order(snapshot: Path, shards: int, heaviest: int) -> list[int]:
    """Every shard index, or the ``heaviest`` ones: most configs first (the query a shard runs)."""
    if not heaviest:
        return list(range(shards))
    conn = sqlite3.connect(f"file:{snapshot}?mode=ro", uri=True)
    try:
        counts = dict(conn.execute("SELECT bucket % ?, COUNT(*) FROM configs GROUP BY 1", (shards,)).fetchall())
    finally:
        conn.close()
    return sorted(range(shards), key=lambda i: -counts.get(i, 0))[:heaviest]


def summarise(shards: int, rows: list[dict[str, Any]], configs: int) -> dict[str, Any]:
    slowest = max(rows, key=lambda r: r["parse_serialise_s"])
    work = [r["parse_serialise_s"] for r in rows]
    return {
        "shards": shards,
        "configs": configs,
        "configs_per_shard": round(configs / shards),
        "slowest_file": slowest["file"],
        "slowest_parse_s": slowest["parse_s"],
        "slowest_serialise_s": slowest["serialise_s"],
        "slowest_parse_serialise_s": slowest["parse_serialise_s"],
        "slowest_dags": slowest["dags"],
        "slowest_peak_rss_mb": slowest["peak_rss_mb"],
        "median_parse_serialise_s": round(med(work), 3),
        "slowest_parse_serialise_cpu_s": slowest["parse_serialise_cpu_s"],
        "max_parse_serialise_cpu_s": max(r["parse_serialise_cpu_s"] for r in rows),
        "median_parse_serialise_cpu_s": round(med([r["parse_serialise_cpu_s"] for r in rows]), 3),
        "total_parse_serialise_s": round(sum(work), 1),
        "total_process_wall_s": round(sum(r["process_wall_s"] for r in rows), 1),
        "median_parse_s": round(med([r["parse_s"] for r in rows]), 3),
        "median_serialise_s": round(med([r["serialise_s"] for r in rows]), 3),
        "median_file_work_s": round(med([r["file_work_s"] for r in rows]), 3),
        "median_encode_s": round(med([r["encode_s"] for r in rows]), 3),
        "median_airflow_imports_s": round(med([r["airflow_imports_s"] for r in rows]), 3),
        "median_plugin_load_s": round(med([r["plugin_load_s"] for r in rows]), 3),
        "median_interpreter_start_s": round(med([r["interpreter_start_s"] for r in rows]), 3),
        "ms_per_dag_median": round(med([1000 * r["parse_serialise_s"] / r["dags"] for r in rows if r["dags"]]), 2),
        "cpu_ms_per_dag_median": round(
            med([1000 * r["parse_serialise_cpu_s"] / r["dags"] for r in rows if r["dags"]]), 2
        ),
        "loadavg_1m_median": round(med([r["loadavg_1m"] for r in rows]), 2),
        "dags_min": min(r["dags"] for r in rows),
        "dags_max": max(r["dags"] for r in rows),
        "dags_total": sum(r["dags"] for r in rows),
        "import_errors": sum(len(r["import_errors"]) for r in rows),
        "within_10s_goal": slowest["parse_serialise_s"] <= 10,
        "per_shard": rows,
    }


def print_summary(s: dict[str, Any]) -> None:
    print(
        f"{s['shards']:>6} {s['parsed_files']:>9} {s['dags_min']:>5}-{s['dags_max']:<5} "
        f"{s['slowest_parse_s']:>6.2f} {s['slowest_serialise_s']:>6.2f} {s['slowest_parse_serialise_s']:>6.2f} "
        f"{s['max_parse_serialise_cpu_s']:>6.2f} {s['median_parse_serialise_s']:>6.2f} "
        f"{s['median_parse_serialise_cpu_s']:>6.2f} {s['total_parse_serialise_s']:>7.1f} "
        f"{s['slowest_peak_rss_mb']:>6.0f} {s['median_airflow_imports_s'] + s['median_plugin_load_s']:>7.2f} "
        f"{s['median_interpreter_start_s']:>5.2f} {s['ms_per_dag_median']:>6.2f} {s['cpu_ms_per_dag_median']:>6.2f} "
        f"{s['loadavg_1m_median']:>5.1f} {'yes' if s['within_10s_goal'] else 'NO':>5}"
    )


HEADER = (
    f"{'shards':>6} {'parsed':>9} {'DAGs/shard':<11} {'slowest (wall s)':^20} {'maxCPU':>6} "
    f"{'median':^13} {'total':>7} {'peakMB':>6} {'imports':>7} {'start':>5} {'ms/DAG':^13} {'load':>5} {'<=10s':>5}\n"
    f"{'':>6} {'files':>9} {'min-max':<11} {'parse':>6} {'serial':>6} {'p+s':>6} {'p+s':>6} {'wall':>6} {'CPU':>6} "
    f"{'p+s':>7} {'slowest':>6} {'s':>7} {'s':>5} {'wall':>6} {'CPU':>6} {'1m':>5}"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", type=int, default=50_000, help="fleet size (about; 5 configs per customer)")
    parser.add_argument("--shards", default="16,32", help="comma-separated shard counts")
    parser.add_argument(
        "--heaviest",
        type=int,
        default=0,
        help="parse only this many shard files of each count, those with the most configs (0: all); "
        "the slowest shard is among them, the median and total are then of those only",
    )
    parser.add_argument("--timeout", type=float, default=300, help="per shard process")
    parser.add_argument("--rewrite", action="store_true", help="write the snapshot again even if present")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fleet_parse.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(RESULT_MARK + json.dumps(child(args.child)), flush=True)
        return

    snapshot, info = ensure_snapshot(args.configs, rewrite=args.rewrite)
    print(f"snapshot {info['path']}: {info['configs']} configs, {info['customers']} customers, {info['size_mb']} MB")
    out = Path(args.out)
    # One file for every fleet size run: a run replaces the earlier one of its size and shard count.
    results: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {"runs": []}
    results["machine_cpus"] = os.cpu_count()
    this_run: list[dict[str, Any]] = []
    for shards in [int(s) for s in args.shards.split(",")]:
        env = airflow_env(snapshot, shards)
        rows = []
        for index in shard_order(snapshot, shards, args.heaviest):
            row = run_shard(index, shards, env, args.timeout)
            rows.append(row)
            print(
                f"  {shards} shards, {row['file']}: {row['dags']} DAGs, parse {row['parse_s']:.2f}s "
                f"(file's own work {row['file_work_s']:.2f}s), serialise {row['serialise_s']:.2f}s "
                f"(CPU {row['parse_cpu_s']:.2f}+{row['serialise_cpu_s']:.2f}s), load {row['loadavg_1m']:.1f}, "
                f"encode {row['encode_s']:.2f}s, imports {row['airflow_imports_s']:.2f}+{row['plugin_load_s']:.2f}s, "
                f"start {row['interpreter_start_s']:.2f}s, peak {row['peak_rss_mb']:.0f} MB"
                + (f", IMPORT ERRORS {list(row['import_errors'])}" if row["import_errors"] else ""),
                flush=True,
            )
        summary = {
            "snapshot": info,
            "parsed_files": f"{len(rows)} of {shards}",
            **summarise(shards, rows, info["configs"]),
        }
        this_run.append(summary)
        results["runs"] = [
            r for r in results["runs"] if (r["configs"], r["shards"]) != (summary["configs"], summary["shards"])
        ] + [summary]
        results["runs"].sort(key=lambda r: (-r["configs"], r["shards"]))
        out.write_text(json.dumps(results, indent=2))  # after each shard count: a partial run keeps its figures
    print()
    print(
        f"fleet of {info['configs']} configs; p+s = parse + serialise of one shard file (wall: what Airflow's "
        "timeouts see; CPU: this process's own); imports = Airflow's + plugins (before the parse)"
    )
    print(HEADER)
    for summary in this_run:
        print_summary(summary)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
