"""Benchmark: the DAG processor of an idle fleet (issue 22). The local stack (no demo) with a
synthetic fleet of ``--configs`` configs, EVERY CONFIG INACTIVE (is_active=False: every DAG is built,
paused, and no run starts); how long the initial parse of every DAG took; then, over
``--idle-minutes`` while the syncer runs its rounds (every CP_SYNC_INTERVAL_SECONDS), the DAG
processor's CPU (its process and all its children), the parses asked for and done, and the new DAG
versions (goals: < 5% of one core, 0 new versions); then every file parsed again at once, as the
periodic timer does (its CPU amortized over PERIODIC_REPARSE_SECONDS; ``--no-full-reparse`` skips
it); and the metadata tables' rows and sizes. Writes
bench/results/fleet_idle.json (``--out``).

    flock /tmp/cp-e2e.lock env PYTHONPATH=plugins .venv/bin/python bench/fleet_idle.py \
        [--configs 50000] [--idle-minutes 10]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from stack_fleet import (
    fleet_dag_count,
    fleet_stack,
    inactive_fleet,
    metadata,
    parsed_at,
    run_pid,
    scalar,
    syncer_log_offset,
    syncer_rounds_since,
    table_sizes,
    tree_cpu_seconds,
    wait_for_dags,
)

CPU_GOAL_PERCENT = 5.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", type=int, default=50_000, help="about; fleet_dataset(configs // 5)")
    parser.add_argument("--idle-minutes", type=float, default=10)
    parser.add_argument("--parse-timeout-minutes", type=float, default=25, help="for the initial parse")
    parser.add_argument("--stall-minutes", type=float, default=5, help="initial parse: give up after no new DAG")
    parser.add_argument("--settle-seconds", type=float, default=60, help="after the initial parse, before the window")
    parser.add_argument("--sync-interval", type=int, default=60)
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument(
        "--no-full-reparse",
        dest="full_reparse",
        action="store_false",
        help="skip the last part: every file parsed again, as the periodic timer does",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "fleet_idle.json"))
    args = parser.parse_args()

    data = inactive_fleet(args.configs, args.seed)
    expected = len(data.configs)
    results: dict = {
        "configs": expected,
        "customers": len(data.customers),
        "all_configs_inactive": True,
        "sync_interval_seconds": args.sync_interval,
        "idle_minutes": args.idle_minutes,
    }
    print(f"fleet: {expected} configs of {len(data.customers)} customers, EVERY CONFIG INACTIVE (paused, no runs)")
    try:
        with fleet_stack(data, sync_interval=args.sync_interval, prefix="cp-bench-idle-") as (info, _synced):
            results["shards"] = info.settings.fleet_shards
            conn = metadata(info)
            seconds, count, progress = wait_for_dags(
                conn, expected, args.parse_timeout_minutes * 60, stall=args.stall_minutes * 60
            )
            results["initial_parse"] = {
                "completed": seconds is not None,
                "seconds_after_first_sync": round(seconds, 1) if seconds is not None else None,
                "dags": count,
                "shard_files_with_dags": len(parsed_at(conn)),
                "progress": progress,
            }
            if seconds is None:
                # Still measured: what the DAG processor does meanwhile is the figure (e.g. the syncer's
                # rounds asking for every shard again before the processor reached the last ones).
                print(f"initial parse NOT complete: {count} of {expected} DAGs; the idle window is measured anyway")
            else:
                print(f"initial parse: {count} DAGs in {seconds:.0f} s after the fleet's first sync")
                time.sleep(args.settle_seconds)
            results["idle"] = idle_window(info, conn, args.idle_minutes * 60)
            if args.full_reparse:
                results["full_reparse"] = full_reparse(info, conn, args.parse_timeout_minutes * 60)
            results["metadata"] = table_sizes(conn)
            conn.close()
    finally:
        report(results)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.out}")


def idle_window(info, conn, seconds: float) -> dict:
    processor = run_pid(info, "airflow-dag-processor")
    others = {name: run_pid(info, name) for name in ("customer-pipelines-syncer", "airflow-scheduler")}
    versions_before = scalar(conn, "SELECT count(*) FROM dag_version")
    # versions beyond each DAG's first: a DAG parsed for the first time in the window adds its first
    re_versions = "SELECT count(*) - count(DISTINCT dag_id) FROM dag_version"
    re_versions_before = scalar(conn, re_versions)
    serialized_before = scalar(conn, "SELECT count(*) FROM serialized_dag")
    offset = syncer_log_offset(info)
    last = parsed_at(conn)
    parses = 0
    cpu = {name: tree_cpu_seconds(pid) for name, pid in {"dag-processor": processor, **others}.items()}
    began = time.monotonic()
    print(f"idle window: {seconds / 60:.1f} min from {datetime.now(UTC):%H:%M:%S} UTC")
    while (left := seconds - (time.monotonic() - began)) > 0:
        time.sleep(min(5.0, left))
        now = parsed_at(conn)  # a shard file parsed again: its DAGs' newest last_parsed_time moved
        parses += sum(1 for file, at in now.items() if at != last.get(file))
        last = now
    elapsed = time.monotonic() - began
    used = {
        name: round(tree_cpu_seconds(pid) - cpu[name], 2)
        for name, pid in {"dag-processor": processor, **others}.items()
    }
    rounds, asked = syncer_rounds_since(info, offset)
    return {
        "seconds": round(elapsed, 1),
        "dag_processor_cpu_seconds": used["dag-processor"],
        "dag_processor_percent_of_one_core": round(used["dag-processor"] / elapsed * 100, 2),
        "cpu_seconds_other": {k: v for k, v in used.items() if k != "dag-processor"},
        "sync_rounds": rounds,
        "files_asked_to_parse": asked,
        "shard_files_parsed": parses,
        "dag_versions_before": versions_before,
        "dag_versions_after": scalar(conn, "SELECT count(*) FROM dag_version"),
        "new_versions_of_existing_dags": scalar(conn, re_versions) - re_versions_before,
        "serialized_dags_before": serialized_before,
        "serialized_dags_after": scalar(conn, "SELECT count(*) FROM serialized_dag"),
        "fleet_dags_after": fleet_dag_count(conn),
        "shard_files_with_dags_after": len(parsed_at(conn)),
    }


def full_reparse(info, conn, timeout: float) -> dict:
    """What the DAG processor's periodic timer costs (PERIODIC_REPARSE_SECONDS): every file asked for
    at once (``parse --all``) with nothing changed; the DAG processor's CPU and the wall time until
    every shard file with DAGs was parsed again, and the new DAG versions it wrote (goal 0)."""
    from customer_pipelines.fleet.parsing import PERIODIC_REPARSE_SECONDS
    from customer_pipelines.local.stack import run_module

    processor = run_pid(info, "airflow-dag-processor")
    before = parsed_at(conn)
    versions_before = scalar(conn, "SELECT count(*) FROM dag_version")
    cpu_before = tree_cpu_seconds(processor)
    began = time.monotonic()
    run_module(info.env, "parse", "--all")
    while True:
        now = parsed_at(conn)
        done = sum(1 for file, at in before.items() if now.get(file) != at)
        if done >= len(before) or time.monotonic() - began > timeout:
            break
        time.sleep(2)
    wall = time.monotonic() - began
    cpu = tree_cpu_seconds(processor) - cpu_before
    print(f"every file parsed again: {done} of {len(before)} shard files in {wall:.0f} s, {cpu:.0f} s of CPU")
    return {
        "shard_files": len(before),
        "shard_files_parsed": done,
        "seconds": round(wall, 1),
        "dag_processor_cpu_seconds": round(cpu, 1),
        "periodic_interval_seconds": PERIODIC_REPARSE_SECONDS,
        "percent_of_one_core_amortized": round(cpu / PERIODIC_REPARSE_SECONDS * 100, 2),
        "new_dag_versions": scalar(conn, "SELECT count(*) FROM dag_version") - versions_before,
    }


def report(results: dict) -> None:
    print()
    print(f"fleet: {results['configs']} configs (all inactive), {results.get('shards')} shard files")
    initial = results.get("initial_parse")
    if initial:
        state = f"{initial['seconds_after_first_sync']} s" if initial["completed"] else "NOT complete"
        print(
            f"initial parse of every DAG        {state} ({initial['dags']} DAGs, "
            f"{initial['shard_files_with_dags']} of {results.get('shards')} shard files)"
        )
    idle = results.get("idle")
    if idle:
        pct = idle["dag_processor_percent_of_one_core"]
        verdict = "within" if pct < CPU_GOAL_PERCENT else "OVER"
        new_versions = idle["dag_versions_after"] - idle["dag_versions_before"]
        print(f"idle window                       {idle['seconds']:.0f} s, {idle['sync_rounds']} sync rounds")
        print(f"DAG processor CPU (with children) {idle['dag_processor_cpu_seconds']:.1f} s")
        print(f"  % of one core                   {pct:.2f} % ({verdict} the {CPU_GOAL_PERCENT:.0f}% goal)")
        for name, used in idle["cpu_seconds_other"].items():
            print(f"  for reference, {name:18s} {used:.1f} s ({used / idle['seconds'] * 100:.2f} % of one core)")
        print(f"parse asked for (syncer rounds)   {idle['files_asked_to_parse']} files")
        print(f"shard files parsed                {idle['shard_files_parsed']}")
        print(
            f"fleet DAGs after the window       {idle['fleet_dags_after']} "
            f"({idle['shard_files_with_dags_after']} shard files with DAGs)"
        )
        print(
            f"dag_version rows                  {idle['dag_versions_before']} -> {idle['dag_versions_after']} "
            f"({new_versions} new, {idle['new_versions_of_existing_dags']} of them of a DAG that had one; goal 0)"
        )
    full = results.get("full_reparse")
    if full:
        print(
            f"every file parsed again (the timer, every {full['periodic_interval_seconds']} s): "
            f"{full['shard_files_parsed']} of {full['shard_files']} files in {full['seconds']:.0f} s, "
            f"{full['dag_processor_cpu_seconds']:.0f} s of CPU ({full['percent_of_one_core_amortized']:.2f} % "
            f"of one core amortized), {full['new_dag_versions']} new DAG versions"
        )
    sizes = results.get("metadata")
    if sizes:
        print(f"{'table':16s} {'rows':>10s} {'on disk':>10s}")
        for table, size in sizes.items():
            print(f"{table:16s} {size['rows']:>10d} {size['bytes'] / 2**20:>8.1f} MB")


if __name__ == "__main__":
    main()
