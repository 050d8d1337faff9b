"""``python -m customer_pipelines``: operate the fleet and the embedded stack."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from datetime import timedelta

from customer_pipelines.local.environment import apply_stack_environment
from customer_pipelines.settings import Plane, Settings, get_settings

DEMO_DAG_ID = "cust_acme_001.acme_gcp_cost_daily"


def _store(settings: Settings):
    from customer_pipelines.bigquery.store import BigQueryStore

    return BigQueryStore(settings)


def cmd_emulator(args: argparse.Namespace, settings: Settings) -> int:
    from customer_pipelines.local import emulator

    settings = settings.model_copy(update={"bigquery_emulator_host": f"127.0.0.1:{settings.emulator_port}"})
    # With CP_DATA_EMULATOR_PORT the data plane has an emulator of its own.
    planes: tuple[Plane, ...] = ("control", "data") if settings.data_emulator_port else ("control",)
    all_ready = True
    for plane in planes:
        if args.action == "start":
            took = emulator.start(settings, plane=plane)
            print(f"BigQuery emulator ({plane}) ready at {emulator.emulator_url(settings, plane)} ({took:.1f}s)")
        elif args.action == "stop":
            print(f"{plane}: " + ("stopped" if emulator.stop_emulator(settings, plane) else "not running"))
        else:
            ready = emulator.is_ready(settings, plane)
            all_ready = all_ready and ready
            print(f"{plane}: {'running' if ready else 'not running'} at {emulator.emulator_url(settings, plane)}")
    return 0 if all_ready else 1


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    applied = _store(settings).apply_schema()
    print(
        f"schema applied to {settings.bq_project}.{settings.bq_dataset} and "
        f"{settings.data_plane_project}.{settings.bq_data_dataset}: {len(applied)} statements"
    )
    return 0


def cmd_seed(args: argparse.Namespace, settings: Settings) -> int:
    from customer_pipelines.seed import demo_dataset, fleet_dataset, load_dataset

    data = demo_dataset() if args.what == "demo" else fleet_dataset(args.customers, seed=args.seed)
    counts = load_dataset(_store(settings), data)
    print("seeded " + ", ".join(f"{table}: {n}" for table, n in counts.items() if n))
    return 0


def cmd_snapshot(args: argparse.Namespace, settings: Settings) -> int:
    from customer_pipelines.fleet.publish import publish_dags
    from customer_pipelines.snapshot import RefreshGuard, Snapshot, refresh_lock, refresh_snapshot
    from customer_pipelines.snapshot_store import fetch_newest
    from customer_pipelines.syncer import converge_paused, request_parses

    if args.action == "refresh":
        guard = RefreshGuard.of(settings)
        # Incremental as the syncer's rounds are (the changed configs only), unless --full or --force.
        full_every = None if args.full else timedelta(minutes=settings.full_refresh_minutes)
        with refresh_lock(settings.snapshot_file):
            if settings.snapshot_store_url:  # generations go on from the store's newest (syncer.py)
                fetch_newest(settings, locked=True)
            result = refresh_snapshot(
                _store(settings), settings.snapshot_file, guard=guard, force=args.force, full_every=full_every
            )
            # The few DAGs it changed are written now (fleet/publish.py), then their shards' parse is
            # asked for (it finds them unchanged, and creates new ones): first, so the DAG processor
            # parses while the flags converge.
            published = publish_dags(settings, result.changed_dag_ids)
            parsed = request_parses(result, settings)
            # As a sync round would, of the DAGs this refresh changed (the next round does them all):
            # the ledger knows the syncer's pauses.
            pauses = converge_paused(settings, only=None if result.full else result.changed_dag_ids)
        read = "every config" if result.full else "the configs changed since the last refresh"
        changed = "all" if result.changed_dag_ids is None else len(result.changed_dag_ids)
        print(
            f"snapshot {result.path}: {result.configs} configs, {result.customers} customers, "
            f"{len(result.invalid)} invalid; read {read}, {changed} DAG(s) changed; "
            f"published {len(published.published)} DAG(s) now; "
            f"paused {len(pauses.paused)}, unpaused {len(pauses.unpaused)}; parse asked for {parsed} file(s)"
        )
        for failure in published.failures:
            print(f"  not published now (its shard's parse will): {failure}")
        for error in result.invalid:
            print(f"  invalid: {error}")
        return 0
    with Snapshot.open_last_good(settings.snapshot_file) as snapshot:
        print(json.dumps({"path": str(snapshot.path), **snapshot.meta}, indent=2))
    return 0


def cmd_parse(args: argparse.Namespace, settings: Settings) -> int:
    from customer_pipelines.fleet.parsing import request_reparse

    if not args.all and not args.dag:
        raise ValueError("parse: give --all, or --dag DAG_ID (repeatable)")
    files = request_reparse(settings, None if args.all else args.dag)
    print(f"asked the DAG processor to parse {len(files)} file(s): {', '.join(files)}")
    return 0


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from customer_pipelines.fleet.factory import InvalidPipelineConfigs, raise_config_errors

    try:
        raise_config_errors(settings=settings)
    except InvalidPipelineConfigs as exc:
        print(exc)
        return 1
    print("every config in the snapshot is valid")
    return 0


def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from customer_pipelines.syncer import run_sync, sync_forever

    if args.loop:
        if args.interval:
            settings = settings.model_copy(update={"sync_interval_seconds": args.interval})
        sync_forever(settings)
        return 0
    report = run_sync(settings)
    print(report.summary())
    for error in report.invalid:
        print(f"  invalid: {error}")
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime, timedelta

    from customer_pipelines.runs.mirror import RunStateMirror
    from customer_pipelines.runs.reconcile import reconcile

    store = _store(settings)
    delivered = RunStateMirror(store, settings.spool_dir).drain(limit=100_000)
    result = reconcile(store, since=datetime.now(UTC) - timedelta(hours=args.hours))
    print(
        f"spooled transitions delivered: {delivered}; tries checked: {result.tries_checked}; "
        f"missing transitions written: {len(result.written)}"
    )
    for row in result.written:
        print(f"  {row['run_key']} try {row['try_number']}: {row['state']}")
    return 0


def cmd_mirror(args: argparse.Namespace, settings: Settings) -> int:
    from customer_pipelines.runs.mirror import RunStateMirror

    mirror = RunStateMirror(_store(settings), settings.spool_dir)
    replayed = mirror.replay_rejected()
    delivered = 0
    while batch := mirror.drain():
        delivered += batch
    print(
        f"replayed {replayed} rejected transition(s); delivered {delivered}; "
        f"still spooled {mirror.backlog()}, rejected again {mirror.rejected()}"
    )
    return 0 if mirror.rejected() == 0 else 1


def cmd_stack(args: argparse.Namespace, settings: Settings) -> int:
    from customer_pipelines.local import stack
    from customer_pipelines.local.airflow import ADMIN_USER, admin_password

    if args.action == "down":
        stopped = stack.down(settings)
        print("stopped: " + (", ".join(stopped) or "nothing was running"))
        return 0
    info = stack.up(settings, seed_demo=not args.no_demo)
    timings = ", ".join(f"{k} {v:.1f}s" for k, v in info.timings.items())
    print(f"Airflow UI: {info.ui_url}  (login {ADMIN_USER} / {admin_password(info.settings)})")
    print(f"state: {info.settings.state_dir}  logs: {info.settings.state_dir / 'run'}")
    print(f"timings: {timings}")
    return 0


def cmd_demo_run(args: argparse.Namespace, settings: Settings) -> int:
    """Trigger a demo DAG through Airflow's REST API and print what the mirror recorded."""
    from customer_pipelines.local import airflow as local_airflow
    from customer_pipelines.local.stack import with_embedded_defaults

    settings = with_embedded_defaults(settings)
    # The admin password goes only to the API server the stack started (its pid owns the port).
    client = local_airflow.client(settings)
    client.wait_for_dags([args.dag_id], timeout=240)
    run = client.trigger(args.dag_id)
    finished = client.wait_for_run(args.dag_id, run["dag_run_id"], timeout=args.timeout)
    print(f"run {args.dag_id} / {run['dag_run_id']}: {finished['state']}")
    rows = _store(settings).query("queries/runs_of_dag_run.sql", {"dag_id": args.dag_id, "run_id": run["dag_run_id"]})
    for row in rows:
        print(
            f"  mirrored {row['state']:<10} try {row['try_number']} "
            f"at {row['event_time']:%H:%M:%S} {row['details'] or ''}"
        )
    return 0 if finished["state"] == "success" and any(r["state"] == "COMPLETED" for r in rows) else 1


def _recovery(settings: Settings) -> tuple[object, object]:
    """The API's own missed-runs and backfill service (one code path for both), as an operator."""
    import getpass

    from customer_pipelines.api.auth import Caller
    from customer_pipelines.api.service import Services

    return Services(settings).recovery, Caller(name=f"cli:{getpass.getuser()}")


def _when(text: str | None) -> object:
    from datetime import datetime

    if text is None:
        return None
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} needs a timezone (e.g. 2026-12-01T00:00:00Z)")
    return value


def cmd_ticks(args: argparse.Namespace, settings: Settings) -> int:
    recovery, _ = _recovery(settings)
    if args.config:
        found = recovery.ticks(args.customer, args.config, _when(args.since), _when(args.until))
        print(f"{found['config_id']}: {found['schedule_cron']} ({found['timezone']}), {found['counts']}")
        for tick in found["ticks"]:
            print(f"  {tick['tick']}  {tick['outcome']:8s} {tick['reason'] or '':18s} {tick['run_id'] or ''}")
        return 0
    report = recovery.missed(args.customer, _when(args.since), _when(args.until))
    print(f"{report['customer_id']}: {report['missing']} tick(s) without a successful run since {report['since']}")
    for config in report["configs"]:
        print(f"  {config['config_id']:40s} {config['missing']:5d}  {config['causes']}")
    return 0


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    import time

    if args.action in ("status", "cancel") and args.id is None:
        raise ValueError(f"backfill {args.action} needs --id")
    if args.action == "create" and (args.since is None or args.until is None):
        raise ValueError("backfill create needs --from and --to (ISO times with a timezone)")
    recovery, caller = _recovery(settings)
    if args.action in ("status", "cancel"):
        if args.action == "cancel":
            status = recovery.cancel(caller, args.customer, args.id)
        else:
            status = recovery.backfill_status(args.customer, args.id)
        print(json.dumps(status, indent=2))
        return 0
    body = {
        "config_ids": args.config or None,
        "from_": _when(args.since),
        "to": _when(args.until),
        "reprocess_behavior": args.reprocess,
        "dry_run": args.dry_run,
    }
    plan = recovery.backfill(caller, args.customer, body)
    print(f"{'config':40s} {'runs':>5s}  first tick                 last tick                  backfill")
    for config in plan["configs"]:
        ticks = config["ticks"]
        first, last = (ticks[0], ticks[-1]) if ticks else ("-", "-")
        print(f"{config['config_id']:40s} {config['runs']:5d}  {first:26s} {last:26s} {config['backfill_id'] or '-'}")
    quota = plan["quota_remaining_today"]
    print(
        f"{plan['runs']} run(s); today's quota left: {'unlimited' if quota is None else quota}"
        + (f"; {plan['runs_over_quota']} would skip with QUOTA_EXCEEDED" if plan["runs_over_quota"] else "")
        + (" (dry run: nothing created)" if args.dry_run else "")
    )
    ids = [c["backfill_id"] for c in plan["configs"] if c["backfill_id"]]
    while args.wait and ids:
        statuses = [recovery.backfill_status(args.customer, backfill_id) for backfill_id in ids]
        print("  " + "; ".join(f"backfill {s['backfill_id']}: {s['runs']}" for s in statuses), flush=True)
        if all(s["completed_at"] for s in statuses):
            break
        time.sleep(5)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m customer_pipelines",
        description="Multi-tenant pipeline scheduling on Airflow 3: operate the fleet and the embedded stack.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("emulator", help="start, stop or check the local BigQuery emulator")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.set_defaults(func=cmd_emulator)

    p = sub.add_parser("schema", help="create datasets, tables and views (idempotent)")
    p.add_argument("action", choices=["apply"])
    p.set_defaults(func=cmd_schema)

    p = sub.add_parser("seed", help="load the demo customers, or a synthetic fleet")
    p.add_argument("what", choices=["demo", "fleet"])
    p.add_argument("--customers", type=int, default=100, help="fleet size (with 'fleet')")
    p.add_argument("--seed", type=int, default=7, help="random seed of the fleet generator")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("snapshot", help="refresh the local config snapshot from BigQuery, or show it")
    p.add_argument("action", choices=["refresh", "show"])
    p.add_argument("--force", action="store_true", help="refresh even if it would stop much of the fleet")
    p.add_argument(
        "--full",
        action="store_true",
        help="read every config, not only those changed since the last refresh (as CP_FULL_REFRESH_MINUTES does)",
    )
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser(
        "parse", help="ask the DAG processor to parse shard files now (after a change of CP_FLEET_SHARDS)"
    )
    p.add_argument("--all", action="store_true", help="every shard file and the errors file")
    p.add_argument("--dag", action="append", help="the shard file of this DAG id (repeat)")
    p.set_defaults(func=cmd_parse)

    p = sub.add_parser("validate", help="list the configs of the snapshot that cannot become DAGs")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("sync", help="refresh the snapshot, then sync pools and paused flags into Airflow")
    p.add_argument("--loop", action="store_true", help="keep syncing every CP_SYNC_INTERVAL_SECONDS")
    p.add_argument("--interval", type=int, default=None, help="seconds between syncs (with --loop)")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("reconcile", help="deliver spooled run states and fill the mirror's gaps from Airflow")
    p.add_argument("--hours", type=float, default=24, help="window to compare, ending now")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("mirror", help="put the transitions BigQuery refused back into the spool and deliver them")
    p.add_argument("action", choices=["replay-rejected"])
    p.set_defaults(func=cmd_mirror)

    p = sub.add_parser("stack", help="start or stop the whole embedded system (emulator, PostgreSQL, Airflow)")
    p.add_argument("action", choices=["up", "down"])
    p.add_argument("--no-demo", action="store_true", help="do not load the demo customers")
    p.set_defaults(func=cmd_stack)

    p = sub.add_parser("demo-run", help="trigger a demo DAG on the running stack and show its mirrored states")
    p.add_argument("--dag-id", default=DEMO_DAG_ID)
    p.add_argument("--timeout", type=float, default=300)
    p.set_defaults(func=cmd_demo_run)

    p = sub.add_parser("ticks", help="every tick of a config (or a customer's missed ones) in a window, and why")
    p.add_argument("--customer", required=True)
    p.add_argument("--config", help="one config's ticks; unset: the customer's ticks without a successful run")
    p.add_argument("--since", help="ISO time with a timezone; default: a day before --until")
    p.add_argument("--until", help="ISO time with a timezone; default: now")
    p.set_defaults(func=cmd_ticks)

    p = sub.add_parser("backfill", help="backfill missed ticks with Airflow's backfill (dry run, status, cancel)")
    p.add_argument("action", choices=["create", "status", "cancel"])
    p.add_argument("--customer", required=True)
    p.add_argument("--config", action="append", help="a config to backfill (repeat); unset: all that can run")
    p.add_argument("--from", dest="since", help="first tick, ISO time with a timezone")
    p.add_argument("--to", dest="until", help="last tick, ISO time with a timezone")
    p.add_argument("--reprocess", choices=["none", "failed"], default="none", help="also rerun failed ticks")
    p.add_argument("--dry-run", action="store_true", help="show the plan and the quota outlook, create nothing")
    p.add_argument("--wait", action="store_true", help="show progress until the backfills end")
    p.add_argument("--id", type=int, help="the backfill (status, cancel)")
    p.set_defaults(func=cmd_backfill)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    try:
        # Before any command imports Airflow: the running stack's settings, unless the user set
        # them; `stack up` records them afresh.
        stack_up = args.command == "stack" and args.action == "up"
        applied = apply_stack_environment(os.environ, recorded=not stack_up)
        if applied:
            logging.getLogger("customer_pipelines").debug("settings of the local stack from %s", applied)
        return func(args, get_settings())
    except Exception as exc:
        logging.getLogger("customer_pipelines").debug("command failed", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return 1
