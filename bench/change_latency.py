"""Benchmark: how long a config edited in BigQuery takes to be live in Airflow (issue 22). The local
stack (no demo) with a synthetic fleet of ``--configs`` configs, EVERY CONFIG INACTIVE (paused, no run
starts); a config is edited as the API or a person edits it (a new version row: the latest row,
version + 1, updated_at now, another display_name) and the time until its DAG is live (its
serialized DAG's dag_hash in the metadata database changed) is measured
(a) with the syncer on its interval (CP_SYNC_INTERVAL_SECONDS, 60 s): from the row's load to live,
    goal <= 2 min;
(b) followed at once by ``python -m customer_pipelines snapshot refresh``: from the command's start
    to live, goal <= 10 s (the command publishes the DAG it changed itself, fleet/publish.py; 0
    published when a syncer round took the edit in first).
Each ``--repeats`` times, one config of another shard each time; writes bench/results/change_latency.json.

    flock /tmp/cp-e2e.lock env PYTHONPATH=plugins .venv/bin/python bench/change_latency.py \
        [--configs 5000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stack_fleet import fleet_stack, inactive_fleet, metadata, wait_for_dags

GOALS = {"syncer_interval": 120.0, "cli_refresh": 10.0}


def dag_hash(conn: Any, dag_id: str) -> str | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT dag_hash FROM serialized_dag WHERE dag_id = %s ORDER BY last_updated DESC LIMIT 1", (dag_id,)
        )
        row = cur.fetchone()
        return row[0] if row else None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", type=int, default=5_000, help="about; fleet_dataset(configs // 5)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sync-interval", type=int, default=60)
    parser.add_argument("--timeout", type=float, default=300, help="per edit, until live")
    parser.add_argument("--parse-timeout-minutes", type=float, default=20, help="for the initial parse")
    parser.add_argument("--stall-minutes", type=float, default=5, help="initial parse: give up after no new DAG")
    parser.add_argument("--seed", type=int, default=22)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "change_latency.json"))
    args = parser.parse_args()

    from customer_pipelines.bigquery.store import BigQueryStore
    from customer_pipelines.fleet.shards import shard_of
    from customer_pipelines.local.stack import run_module

    data = inactive_fleet(args.configs, args.seed)
    print(f"fleet: {len(data.configs)} configs, EVERY CONFIG INACTIVE (paused, no runs); edits change display_name")
    results: dict = {
        "configs": len(data.configs),
        "all_configs_inactive": True,
        "sync_interval_seconds": args.sync_interval,
        "edits": {"syncer_interval": [], "cli_refresh": []},
    }
    rng = random.Random(args.seed)
    try:
        with fleet_stack(data, sync_interval=args.sync_interval, prefix="cp-bench-change-") as (info, _):
            shards = info.settings.fleet_shards
            results["shards"] = shards
            conn = metadata(info)
            seconds, count, _ = wait_for_dags(
                conn, len(data.configs), args.parse_timeout_minutes * 60, stall=args.stall_minutes * 60
            )
            results["initial_parse"] = {"seconds": round(seconds, 1) if seconds else None, "dags": count}
            if seconds is None:
                # Measured anyway, on the DAGs that are there (a config needs its DAG's first hash).
                print(f"initial parse NOT complete: {count} of {len(data.configs)} DAGs; edits only of those")
            else:
                print(f"initial parse: {count} DAGs in {seconds:.0f} s")
            store = BigQueryStore(info.settings)
            with conn.cursor() as cur:
                cur.execute("SELECT DISTINCT dag_id FROM serialized_dag")
                built = {dag_id for (dag_id,) in cur.fetchall()}
            picked = [
                r
                for r in rng.sample(data.configs, len(data.configs))
                if f"{r['customer_id']}.{r['config_id']}" in built
            ]
            used_shards: set[int] = set()

            def next_config() -> dict:
                """A config of a shard not edited yet, while there is one."""
                fresh = [
                    r for r in picked if shard_of(f"{r['customer_id']}.{r['config_id']}", shards) not in used_shards
                ]
                row = (fresh or picked)[0]
                picked.remove(row)
                used_shards.add(shard_of(f"{row['customer_id']}.{row['config_id']}", shards))
                return row

            for n in range(args.repeats):
                for mode in ("syncer_interval", "cli_refresh"):
                    row = next_config()
                    dag_id = f"{row['customer_id']}.{row['config_id']}"
                    before = dag_hash(conn, dag_id)
                    edit = {
                        **row,
                        "display_name": f"{row['display_name']} edited {n} {mode}",
                        "version": row["version"] + 1,
                        "updated_at": datetime.now(UTC),
                        "updated_by": "bench",
                    }
                    load_began = time.monotonic()
                    store.load_rows("customer_pipeline_configs", [edit])
                    loaded = time.monotonic()
                    refresh_s = published = None
                    if mode == "cli_refresh":
                        began = time.monotonic()  # from the command's start
                        output = run_module(info.env, "snapshot", "refresh")
                        refresh_s = time.monotonic() - began
                        # 0 when a syncer round took the edit in first (it asked for the shard's parse)
                        found = re.search(r"published (\d+) DAG", output)
                        published = int(found.group(1)) if found else None
                    else:
                        began = loaded  # from the row in BigQuery
                    while dag_hash(conn, dag_id) == before:
                        if time.monotonic() - began > args.timeout:
                            break
                        time.sleep(0.25)
                    live = time.monotonic() - began
                    timed_out = live > args.timeout
                    entry = {
                        "dag_id": dag_id,
                        "shard": shard_of(dag_id, shards),
                        "load_rows_s": round(loaded - load_began, 2),
                        "refresh_command_s": round(refresh_s, 2) if refresh_s is not None else None,
                        "published_by_the_command": published,
                        "live_s": None if timed_out else round(live, 2),
                    }
                    results["edits"][mode].append(entry)
                    state = "NOT live" if timed_out else "live"
                    extra = (
                        f" (the command took {refresh_s:.1f} s, published {published} DAG itself)"
                        if refresh_s is not None
                        else ""
                    )
                    print(f"  {mode:16s} #{n + 1}: {dag_id} {state} after {live:.1f} s{extra}")
            conn.close()
    finally:
        report(results)
        Path(args.out).write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.out}")


def report(results: dict) -> None:
    print()
    print(f"fleet: {results['configs']} configs (all inactive), syncer every {results['sync_interval_seconds']} s")
    print(f"{'edit, then':40s} {'n':>3s} {'median':>8s} {'max':>8s} {'goal':>7s}")
    labels = {
        "syncer_interval": "the syncer's next round (from the load)",
        "cli_refresh": "`snapshot refresh` (from its start)",
    }
    summary = {}
    for mode, edits in results["edits"].items():
        times = [e["live_s"] for e in edits if e["live_s"] is not None]
        missed = len(edits) - len(times)
        if not edits:
            continue
        median = statistics.median(times) if times else None
        worst = max(times) if times and not missed else None
        summary[mode] = {"n": len(edits), "not_live": missed, "median_s": median, "max_s": worst}
        med = f"{median:7.1f}s" if median is not None else "      -"
        mx = f"{worst:7.1f}s" if worst is not None else "timeout"
        print(f"{labels[mode]:40s} {len(edits):3d} {med:>8s} {mx:>8s} {GOALS[mode]:6.0f}s")
    results["summary"] = summary


if __name__ == "__main__":
    main()
