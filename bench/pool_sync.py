"""Benchmark: syncing per-customer pools into Airflow's metadata DB (PostgreSQL).

Prints, for 1,000 and 10,000 customers: the first sync (all pools created), a no-change sync, and a
sync after 1% of plans changed; writes bench/results/pool_sync.json.

    PYTHONPATH=plugins .venv/bin/python bench/pool_sync.py [--postgres URL]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sizes", default="1000,10000")
    args = parser.parse_args()

    name = f"cp_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(args.postgres)
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{name}"')
    url = args.postgres.rsplit("/", 1)[0] + f"/{name}"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = url.replace("postgresql://", "postgresql+psycopg2://")
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="cp-bench-")
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True, env=os.environ)

    from customer_pipelines.models import Customer
    from customer_pipelines.sync import desired_pools, sync_pools

    results = []
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            prefix = f"b{size}_"
            customers = {
                f"c{i:06d}": Customer(customer_id=f"c{i:06d}", status="ACTIVE", plan="SCALE", max_concurrent_runs=5)
                for i in range(size)
            }
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
                f"{size:>6} customers: first sync {row['first_sync_s']:.2f}s ({row['first_sync_writes']} writes), "
                f"no-change {row['no_change_sync_s']:.2f}s ({row['no_change_sync_writes']} writes), "
                f"1% changed {row['one_percent_changed_s']:.2f}s ({row['one_percent_changed_writes']} writes)"
            )
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    out = Path(__file__).parent / "results" / "pool_sync.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
