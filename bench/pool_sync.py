"""Benchmark: syncing per-customer pools into Airflow's metadata DB (PostgreSQL).

Prints what every scheduler loop pays for pools (Pool.slots_stats with row locks) with 10, 1,000
and 10,000 pools, and, for 1,000 and 10,000 customers, the first pool sync (all created), a no-change
sync and a sync after 1% of plans changed; writes bench/results/pool_sync.json.

    PYTHONPATH=plugins .venv/bin/python bench/pool_sync.py [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from airflow_db import migrated_airflow_db


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args()

    with migrated_airflow_db(args.postgres):
        results = run(args)
    out = Path(__file__).parent / "results" / "pool_sync.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


def _customers(size: int, max_concurrent: int = 5) -> dict:
    from customer_pipelines.models import Customer

    return {
        f"c{i:06d}": Customer(
            customer_id=f"c{i:06d}", status="ACTIVE", plan="SCALE", max_concurrent_runs=max_concurrent
        )
        for i in range(size)
    }


def scheduler_pool_cost(counts: list[int], repeats: int = 30) -> list[dict]:
    """What every scheduler loop pays for pools: Pool.slots_stats(lock_rows=True) in a transaction
    (airflow/jobs/scheduler_job_runner.py, _executable_task_instances_to_queued)."""
    from airflow.models.pool import Pool
    from airflow.utils.session import create_session

    from customer_pipelines.fleet.sync import desired_pools, sync_pools

    rows = []
    for count in counts:
        sync_pools(desired_pools(_customers(count), "s_"), "s_")
        timings = []
        for _ in range(repeats):
            with create_session() as session:
                began = time.perf_counter()
                stats = Pool.slots_stats(lock_rows=True, session=session)
                timings.append(time.perf_counter() - began)
        rows.append(
            {
                "pools": len(stats),
                "slots_stats_median_ms": round(statistics.median(timings) * 1000, 2),
                "slots_stats_max_ms": round(max(timings) * 1000, 2),
            }
        )
    sync_pools({}, "s_")
    base = rows[0]["slots_stats_median_ms"]
    for row in rows:
        print(
            f"scheduler loop pool cost with {row['pools']:>6} pools: median {row['slots_stats_median_ms']:.2f} ms "
            f"(max {row['slots_stats_max_ms']:.2f} ms), {row['slots_stats_median_ms'] / base:.1f}x the smallest"
        )
    return rows


def sync_cost(sizes: list[int]) -> list[dict]:
    from customer_pipelines.fleet.sync import desired_pools, sync_pools

    results = []
    for size in sizes:
        prefix = f"b{size}_"
        customers = _customers(size)
        row = {"customers": size}
        for label in ("first_sync", "no_change_sync", "one_percent_changed"):
            if label == "one_percent_changed":
                for i, key in enumerate(list(customers)[: size // 100]):
                    customers[key] = customers[key].model_copy(update={"max_concurrent_runs": 6 + i % 3})
            desired = desired_pools(customers, prefix)
            began = time.perf_counter()
            result = sync_pools(desired, prefix)
            row[label + "_s"] = round(time.perf_counter() - began, 3)
            row[label + "_writes"] = len(result.created) + len(result.updated) + len(result.deleted)
        results.append(row)
        print(
            f"pool sync, {size:>6} customers: first {row['first_sync_s']:.2f}s ({row['first_sync_writes']} writes), "
            f"no-change {row['no_change_sync_s']:.2f}s ({row['no_change_sync_writes']} writes), "
            f"1% changed {row['one_percent_changed_s']:.2f}s ({row['one_percent_changed_writes']} writes)"
        )
    return results


def run(args: argparse.Namespace) -> dict:
    from customer_pipelines.fleet.sync import sync_pools

    sync_pools({}, "warmup_")  # ORM and connection warm-up, not counted
    sizes = [int(s) for s in args.sizes.split(",")]
    return {"scheduler_pool_cost": scheduler_pool_cost([10, *sizes]), "pool_sync": sync_cost(sizes)}


if __name__ == "__main__":
    main()
