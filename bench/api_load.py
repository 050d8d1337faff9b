"""Benchmark: the REST API under 32 concurrent clients on loopback, against the emulator, with
1,000 customers (about 5,000 configs): requests per second and p50 / p99 latency of list-configs,
get-config and pause/enable, with the BigQuery calls each made, and Airflow's own ``/api/v2/dags``
measured in the same run as the reference. Writes bench/results/api_load.json.

    PYTHONPATH=plugins .venv/bin/python bench/api_load.py [--customers 1000] [--requests 1000]

The 32 clients share the machine's cores with the server they measure, so each is one keep-alive
connection of the standard library's http.client (``--client httpx``: the httpx client of earlier
runs, which cost about 0.6x the server's own CPU per request; both send the same requests and headers).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

CLIENTS = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class KeepAliveClients:
    """One persistent HTTP/1.1 connection per client thread, sending what httpx sends (its default
    headers: gzip accepted, keep-alive) and reading, and un-gzipping, the whole answer."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        url = urlsplit(base)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.headers = {
            "Accept": "*/*",
            "Accept-Encoding": "gzip, deflate",
            "Connection": "keep-alive",
            "User-Agent": f"python-httpx/{httpx.__version__}",
            **headers,
        }
        self._local = threading.local()

    def request(self, method: str, path: str) -> int:
        conn = getattr(self._local, "conn", None) or http.client.HTTPConnection(self.host, self.port, timeout=120)
        self._local.conn = conn
        try:
            conn.request(method, path, headers=self.headers)
            response = conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException):
            conn.close()
            self._local.conn = None
            raise
        if response.getheader("Content-Encoding") == "gzip":
            zlib.decompress(body, 16 + zlib.MAX_WBITS)
        return response.status


def session_cpu_seconds(leader: int | None) -> float | None:
    """CPU time (user + system) of every process of the session ``leader`` started (the API server
    and any workers of it); None when unknown."""
    if leader is None:
        return None
    ticks = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == leader:  # the session id (field 6 of proc(5); fields here start at 3)
            ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(name: str, calls: list[Any], send: Any, bigquery_calls: Any, server: int | None = None) -> dict[str, Any]:
    before = bigquery_calls()
    server_cpu = session_cpu_seconds(server)
    latencies: list[float] = []
    failures = 0

    def one(call: Any) -> None:
        nonlocal failures
        began = time.perf_counter()
        try:
            failed = send(call) >= 300
        except (httpx.HTTPError, OSError, http.client.HTTPException):
            failed = True
        latencies.append(time.perf_counter() - began)
        failures += failed

    began, client_cpu = time.perf_counter(), time.process_time()
    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        list(pool.map(one, calls))
    elapsed = time.perf_counter() - began
    # The clients share the machine's cores with the server: what they cost is part of the picture.
    client_cpu = time.process_time() - client_cpu
    server_after = session_cpu_seconds(server)
    after = bigquery_calls()
    queries = after.get("query", 0) - before.get("query", 0)
    inserts = after.get("insert", 0) - before.get("insert", 0)
    latencies.sort()
    result = {
        "route": name,
        "requests": len(calls),
        "failed": failures,
        "rps": round(len(calls) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 1),
        "client_cpu_ms_per_request": round(client_cpu / len(calls) * 1000, 2),
        "server_cpu_ms_per_request": (
            round((server_after - server_cpu) / len(calls) * 1000, 2)
            if server_cpu is not None and server_after is not None
            else None
        ),
        "bigquery_queries_per_request": round(queries / len(calls), 3) if bigquery_calls is not None else None,
        "bigquery_inserts_per_request": round(inserts / len(calls), 3) if bigquery_calls is not None else None,
    }
    print(
        f"{name:32s} {result['requests']:6d} req  {result['rps']:8.1f} req/s  p50 {result['p50_ms']:7.1f} ms  "
        f"p99 {result['p99_ms']:7.1f} ms  failed {failures}  "
        f"CPU/req server {result['server_cpu_ms_per_request']} ms client {result['client_cpu_ms_per_request']} ms  "
        f"BigQuery queries/req {result['bigquery_queries_per_request']}  "
        f"inserts/req {result['bigquery_inserts_per_request']}"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--customers", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--writes", type=int, default=320)
    parser.add_argument("--reference-requests", type=int, default=200, help="Airflow's /api/v2/dags is slow")
    parser.add_argument("--client", choices=("keepalive", "httpx"), default="keepalive")
    parser.add_argument(
        "--skip-reference", action="store_true", help="while iterating: no /api/v2/dags phase, no results file"
    )
    args = parser.parse_args()

    from customer_pipelines.api.app import URL_PREFIX
    from customer_pipelines.bigquery.store import BigQueryStore
    from customer_pipelines.local import stack as local_stack
    from customer_pipelines.local.airflow import api_url
    from customer_pipelines.local.airflow import client as stack_client
    from customer_pipelines.local.processes import read_pid
    from customer_pipelines.local.stack import run_module
    from customer_pipelines.seed import fleet_dataset, load_dataset
    from customer_pipelines.settings import Settings

    # The API servers's own limit per caller (600 a minute by default) would refuse the benchmark's one caller.
    os.environ["CP_API_RATE_LIMIT_PER_MINUTE"] = "1000000"
    state = Path(tempfile.mkdtemp(prefix="cp-bench-api-", dir="/var/tmp"))
    state.chmod(0o700)
    settings = Settings(
        state_dir=state,
        emulator_port=free_port(),
        emulator_grpc_port=free_port(),
        airflow_port=free_port(),
        bq_project="bench-project",
        sync_interval_seconds=3600,
    )
    try:
        info = local_stack.up(settings, seed_demo=False)
        data = fleet_dataset(args.customers, seed=11)
        load_dataset(BigQueryStore(info.settings), data)
        run_module(info.env, "sync")
        token = stack_client(info.settings).token()
        base = api_url(info.settings)
        headers = {"Authorization": f"Bearer {token}"}
        http = httpx.Client(headers=headers, timeout=120, limits=httpx.Limits(max_connections=CLIENTS))
        if args.client == "httpx":

            def send(method: str, path: str) -> int:
                return http.request(method, f"{base}{path}").status_code

        else:
            send = KeepAliveClients(base, headers).request
        # Steady state: the DAG processor has created the fleet's DAGs (it keeps re-parsing the fleet
        # file afterwards, as in production).
        began, seen = time.monotonic(), -1
        while time.monotonic() - began < 900:
            total = http.get(f"{base}/api/v2/dags", params={"limit": 1}).json()["total_entries"]
            # done when all are there, or when a parse added none (0 is not done: the first parse
            # writes nothing until it ends)
            if total >= len(data.configs) or (total == seen and total > 0):
                break
            seen = total
            time.sleep(20)
        print(f"{total} DAGs in Airflow after {time.monotonic() - began:.0f} s")

        def api_calls() -> dict[str, int]:
            return http.get(f"{base}{URL_PREFIX}/fleet/status").json()["api_bigquery_calls"]

        server = read_pid(info.settings.state_dir / "run" / "airflow-api-server.pid")
        rng = random.Random(5)
        configs = [(c["customer_id"], c["config_id"]) for c in data.configs]
        customers = sorted({c for c, _ in configs})
        results = []
        send("GET", f"{URL_PREFIX}/customers/{customers[0]}/configs")  # warm: snapshot opened, keys loaded
        results.append(
            measure(
                "GET list configs",
                [rng.choice(customers) for _ in range(args.requests)],
                lambda c: send("GET", f"{URL_PREFIX}/customers/{c}/configs"),
                api_calls,
                server,
            )
        )
        results.append(
            measure(
                "GET one config",
                [rng.choice(configs) for _ in range(args.requests)],
                lambda cc: send("GET", f"{URL_PREFIX}/customers/{cc[0]}/configs/{cc[1]}"),
                api_calls,
                server,
            )
        )
        writes = [(rng.choice(configs), "pause" if i % 2 == 0 else "enable") for i in range(args.writes)]
        results.append(
            measure(
                "POST pause / enable",
                writes,
                lambda w: send("POST", f"{URL_PREFIX}/customers/{w[0][0]}/configs/{w[0][1]}/{w[1]}"),
                api_calls,
                server,
            )
        )
        if args.skip_reference:
            return
        results.append(
            measure(
                "Airflow GET /api/v2/dags (reference)",
                list(range(args.reference_requests)),
                lambda _: send("GET", "/api/v2/dags?limit=100"),
                lambda: {},
                server,
            )
        )
        out = Path(__file__).parent / "results" / "api_load.json"
        out.write_text(
            json.dumps(
                {
                    "customers": args.customers,
                    "configs": len(configs),
                    "clients": CLIENTS,
                    "client": args.client,
                    "results": results,
                },
                indent=2,
            )
        )
        print(f"wrote {out}")
    finally:
        local_stack.down(settings)  # also what a failed start left running
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
