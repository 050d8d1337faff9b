"""Benchmark: what mirroring a run costs, ours vs the original design's.

For N runs (default 200) against a fresh BigQuery emulator, counts the BigQuery calls per run at
the client (by kind: streaming inserts, queries, DML statements) and times the mirror writes a task
waits for, for:
- ours: the operator's RUNNING and COMPLETED transitions (streaming inserts, no DML), plus the
  scheduler listener's SCHEDULED and QUEUED (spooled, delivered in one batch: the task never waits);
- the seeds' design: INSERT the run row, UPDATE it twice (RUNNING, COMPLETED), UPDATE the config's
  last run, UPDATE the usage counters (5 DML statements per run, all on hot tables).
Writes bench/results/mirror_cost.json.

    PYTHONPATH=plugins .venv/bin/python bench/mirror_cost.py [--runs 200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from customer_pipelines.bigquery.store import BigQueryStore, split_statements
from customer_pipelines.local import emulator
from customer_pipelines.runs.mirror import RunIdentity, RunState, RunStateMirror, run_event
from customer_pipelines.settings import Settings

HERE = Path(__file__).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def ours(store: BigQueryStore, runs: int, spool: Path) -> dict:
    mirror = RunStateMirror(store, spool)
    store.calls.clear()
    task_wait = []
    for i in range(runs):
        identity = RunIdentity(
            config_id="bench_cfg",
            customer_id="bench",
            dag_id="bench.bench_cfg",
            run_id=f"bench_{i}",
            task_id="run_pipeline",
            try_number=1,
        )
        mirror.spool(run_event(identity, RunState.SCHEDULED, source="listener"))  # the scheduler's side
        mirror.spool(run_event(identity, RunState.QUEUED, source="listener"))
        started = datetime.now(UTC)
        began = time.perf_counter()
        mirror.record(run_event(identity, RunState.RUNNING, source="operator", started_at=started))
        mirror.record(
            run_event(identity, RunState.COMPLETED, source="operator", started_at=started, ended_at=datetime.now(UTC))
        )
        task_wait.append(time.perf_counter() - began)
    mirror.drain(limit=10**6)
    return {"calls": dict(store.calls), "task_wait": task_wait}


def seeds(store: BigQueryStore, runs: int) -> dict:
    from google.cloud import bigquery

    def load(name: str) -> list[str]:
        from string import Template as T

        text = T((HERE / "sql" / name).read_text()).substitute(
            project=store.settings.bq_project, dataset=store.settings.bq_dataset
        )
        return split_statements(text)

    for statement in load("seed_design.sql"):
        store.client.query(statement).result()
    store.client.query(
        f"INSERT INTO `{store.settings.bq_project}.{store.settings.bq_dataset}.bench_seed_configs` "
        "VALUES ('bench_cfg', NULL, NULL)"
    ).result()
    store.client.query(
        f"INSERT INTO `{store.settings.bq_project}.{store.settings.bq_dataset}.bench_seed_usage` VALUES ('bench', 0, 0)"
    ).result()
    per_run = load("seed_design_run.sql")
    dml = 0
    task_wait = []
    for i in range(runs):
        params = [
            bigquery.ScalarQueryParameter("run_id", "STRING", f"seed_{i}"),
            bigquery.ScalarQueryParameter("config_id", "STRING", "bench_cfg"),
            bigquery.ScalarQueryParameter("customer_id", "STRING", "bench"),
        ]
        began = time.perf_counter()
        for statement in per_run:
            used = [p for p in params if f"@{p.name}" in statement]
            store.client.query(statement, job_config=bigquery.QueryJobConfig(query_parameters=used)).result()
            dml += 1
        task_wait.append(time.perf_counter() - began)
    return {"calls": {"dml": dml}, "task_wait": task_wait}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="cp-bench-bq-", dir="/var/tmp"))
    port = _free_port()
    settings = Settings(
        state_dir=state,
        emulator_port=port,
        emulator_grpc_port=_free_port(),
        bigquery_emulator_host=f"127.0.0.1:{port}",
        bq_project="bench-project",
    )
    try:
        emulator.start(settings)
        store = BigQueryStore(settings)
        store.apply_schema()
        results = {"runs": args.runs, "ours": ours(store, args.runs, state / "spool"), "seeds": seeds(store, args.runs)}
    finally:
        emulator.stop_emulator(settings)
        shutil.rmtree(state, ignore_errors=True)

    rows = []
    for name in ("ours", "seeds"):
        r = results[name]
        calls = r["calls"]
        waits = [w * 1000 for w in r.pop("task_wait")]
        r.update(
            {
                "dml_per_run": calls.get("dml", 0) / args.runs,
                "api_calls_per_run": sum(calls.values()) / args.runs,
                "task_wait_ms_p50": round(statistics.median(waits), 1),
                "task_wait_ms_p99": round(_pct(waits, 0.99), 1),
            }
        )
        rows.append((name, r))
    print(f"{args.runs} runs against the BigQuery emulator")
    print(f"{'design':<8} {'DML/run':>8} {'API calls/run':>14} {'task waits p50':>15} {'p99':>8}  calls")
    for name, r in rows:
        print(
            f"{name:<8} {r['dml_per_run']:>8.2f} {r['api_calls_per_run']:>14.2f} "
            f"{r['task_wait_ms_p50']:>12.1f} ms {r['task_wait_ms_p99']:>5.1f} ms  {r['calls']}"
        )
    ours_r, seeds_r = results["ours"], results["seeds"]
    print(
        f"ratio seeds/ours: task wait p50 {seeds_r['task_wait_ms_p50'] / ours_r['task_wait_ms_p50']:.1f}x; "
        f"DML per run {seeds_r['dml_per_run']:.0f} vs {ours_r['dml_per_run']:.0f}"
    )
    out = HERE / "results" / "mirror_cost.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
