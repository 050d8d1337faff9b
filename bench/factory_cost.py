"""Benchmark: the factory's whole cost per DAG against a plain loop and dag-factory 1.1.0 (issue 22).

For each fleet size, in fresh Python processes (one per variant and size, so peak memory is the
variant's own), builds the same DAGs three ways and reports ms per DAG and peak RSS:

- ours: ``factory.load_fleet`` on the snapshot: the snapshot read, every config's validation, the
  customer lookups and the DAG construction (what a shard file's parse pays);
- plain: a hand loop calling Airflow's ``DAG(...)`` and the operator with the very arguments our
  factory passes (Airflow's own construction cost, the floor). The arguments are prepared by the
  parent and unpickled before the timer, so the loop's process starts as cold as ours: building
  them in the timed process would warm the caches ours pays to fill (the timetables' per-cron
  work, Airflow's configuration lookups) and flatter the loop;
- plain, collector paused: the same loop inside ``factory.collection_paused()``, as our factory
  builds a file's DAGs (Python's cyclic collector off during the build): ours against it is the
  factory's own work (read, validation, lookups), apart from what pausing the collector saves;
- dag-factory 1.1.0: ``load_yaml_dags`` on a YAML file describing the same DAGs (the same
  arguments, the timetable by ``__type__``), installed apart (``bench/requirements-dagfactory.txt``
  into ``bench/.dagfactory``, only for this benchmark).

Each child freezes its heap before the build, as Airflow's DAG processor does before it forks a
file's parser (so collections walk only what the parse creates). Before timing, a child checks the
three build the same DAGs: the serialised DAGs of a sample are equal (``DagSerialization.to_dict``),
so the ratios compare equal work. Prints a table with the ratios to the plain loop (goal: ours at
most 1.25x the plain loop as written by hand) and writes bench/results/factory_cost.json.

    PYTHONPATH=plugins .venv/bin/python bench/factory_cost.py [--configs 1000,10000,50000] [--repeats 7,3,1]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from fleet_snapshot import REPO, WORK_DIR, airflow_env, ensure_snapshot, rss_mb

DAGFACTORY_DIR = REPO / "bench" / ".dagfactory"
RESULT_MARK = "FACTORY_COST_RESULT "
VARIANTS = ("plain", "plain_paused", "ours", "dagfactory")
DAGFACTORY_CANNOT_SET = {"deadline", "dag_display_name"}
"""DAG arguments dag-factory 1.1.0 does not pass to ``DAG()`` (it has no ``deadline`` key, and sets
``dag_display_name`` to the DAG id): left out of the equality check for its DAGs, as are the
``dagfactory`` tag and the DAG's YAML source it adds to every DAG (to tags and doc_md)."""


def _as_snapshot_datetime(value: datetime | None) -> datetime | None:
    return datetime.fromisoformat(value.isoformat()) if value else None


def _dag_arguments(snapshot: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(DAG kwargs, operator kwargs) of every DAG our factory builds, taken from the DAGs it built:
    the plain loop and the YAML pass exactly these."""
    from customer_pipelines.fleet import factory

    result = factory.load_fleet(snapshot_path=snapshot)
    arguments = []
    for dag in result.dags.values():
        [task] = dag.tasks
        timetable = dag.timetable.serialize()
        dag_kwargs = {
            "dag_id": dag.dag_id,
            # the timetable's arguments: the plain loop constructs it, as a hand loop would
            "schedule": {
                "cron": timetable["expression"],
                "timezone": timetable["timezone"],
                # as the factory passes it: the snapshot's datetime (the timetable coerces it)
                "runnable_since": _as_snapshot_datetime(dag.timetable.runnable_since),
                "auto_backfill_ticks": timetable["auto_backfill_ticks"],
            },
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "is_paused_upon_creation": dag.is_paused_upon_creation,
            "tags": sorted(dag.tags),
            "description": dag.description,
            "doc_md": dag.doc_md,
            "default_args": dict(dag.default_args),
            "deadline": dag.deadline,
        }
        op_kwargs = {
            "task_id": task.task_id,
            "config_id": task.config_id,
            "customer_id": task.customer_id,
            "provider": task.provider,
            "pipeline_template": task.pipeline_template,
            "parameters": dict(task.parameters),
            "timezone": task.timezone,
        }
        arguments.append((dag_kwargs, op_kwargs))
    return arguments


def _plain(arguments: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    from airflow.sdk import DAG

    from customer_pipelines.fleet.timetables import CustomerCronTimetable
    from customer_pipelines.runs.operators import CustomerPipelineOperator

    dags = {}
    for dag_kwargs, op_kwargs in arguments:
        schedule = dag_kwargs["schedule"]
        timetable = CustomerCronTimetable(
            schedule["cron"],
            timezone=schedule["timezone"],
            runnable_since=schedule["runnable_since"],
            auto_backfill_ticks=schedule["auto_backfill_ticks"],
        )
        dag = DAG(**{**dag_kwargs, "schedule": timetable})
        with dag:
            CustomerPipelineOperator(**op_kwargs)
        dags[dag.dag_id] = dag
    return dags


def _timetable_yaml(schedule: dict[str, Any]) -> dict[str, Any]:
    """The timetable as dag-factory builds an object: ``__type__`` and its arguments."""
    since = schedule["runnable_since"]
    return {
        "__type__": "customer_pipelines.fleet.timetables.CustomerCronTimetable",
        "__args__": [schedule["cron"]],
        "timezone": schedule["timezone"],
        "runnable_since": since,
        "auto_backfill_ticks": schedule["auto_backfill_ticks"],
    }


def _yaml_config(arguments: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """dag-factory's YAML for the same DAGs (durations in seconds by its ``*_sec`` keys)."""
    config: dict[str, Any] = {}
    for dag_kwargs, op_kwargs in arguments:
        default_args = dict(dag_kwargs["default_args"])
        for key in ("retry_delay", "max_retry_delay", "execution_timeout"):
            if key in default_args:
                default_args[key] = {"__type__": "datetime.timedelta", "seconds": default_args[key].total_seconds()}
        entry = {
            key: value
            for key, value in dag_kwargs.items()
            if key not in ("dag_id", "schedule", "default_args", "deadline")
        }
        entry["schedule"] = _timetable_yaml(dag_kwargs["schedule"])
        entry["default_args"] = default_args
        task = {k: v for k, v in op_kwargs.items() if k != "task_id"}
        task["operator"] = "customer_pipelines.runs.operators.CustomerPipelineOperator"
        entry["tasks"] = {op_kwargs["task_id"]: task}
        config[dag_kwargs["dag_id"]] = entry
    return config


def write_arguments(snapshot: Path, configs: int) -> Path:
    """The plain loop's arguments, pickled (built here, in the parent, not in the timed process)."""
    path = WORK_DIR / f"plain-arguments-{configs}.pickle"
    path.write_bytes(pickle.dumps(_dag_arguments(snapshot)))
    return path


def read_arguments(path: Path) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return pickle.loads(path.read_bytes())  # the file this benchmark wrote a moment ago


def child(variant: str, snapshot: Path, yaml_path: Path, arguments_path: Path) -> dict[str, Any]:
    from airflow.sdk import DAG

    from customer_pipelines.fleet import factory
    from customer_pipelines.runs import operators  # noqa: F401 - imported by all three alike

    if variant == "dagfactory":
        sys.path.insert(0, str(DAGFACTORY_DIR))
        import dagfactory
    # Airflow's DAG processor freezes its heap (gc.freeze(), dag_processing/manager.py before_run)
    # before it forks the processes that parse files, so a parse's collections never walk Airflow's
    # own objects; without it, one variant crossing a full collection's threshold and another not
    # decides the ratio at 1,000 configs (a full walk of this heap costs about 175 ms).
    gc.freeze()
    arguments = read_arguments(arguments_path) if variant.startswith("plain") else None
    rss_before = rss_mb()
    began, cpu = time.perf_counter(), time.process_time()
    if variant == "ours":
        dags = factory.load_fleet(snapshot_path=snapshot).dags
    elif variant == "plain":
        dags = _plain(arguments)
    elif variant == "plain_paused":
        with factory.collection_paused():
            dags = _plain(arguments)
    else:
        namespace: dict[str, Any] = {}
        dagfactory.load_yaml_dags(namespace, config_filepath=str(yaml_path))
        dags = {d.dag_id: d for d in namespace.values() if isinstance(d, DAG)}
    seconds, cpu_s = time.perf_counter() - began, time.process_time() - cpu
    return {
        "variant": variant,
        "dags": len(dags),
        "seconds": seconds,
        "cpu_s": cpu_s,
        "ms_per_dag": 1000 * seconds / max(1, len(dags)),
        "peak_rss_mb": rss_mb(),
        "rss_growth_mb": rss_mb() - rss_before,
    }


def check_same_dags(snapshot: Path, yaml_path: Path, arguments_path: Path, sample: int = 200) -> int:
    """The three build equal serialised DAGs (a sample of ``sample``); returns how many compared."""
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from customer_pipelines.fleet import factory

    sys.path.insert(0, str(DAGFACTORY_DIR))
    import dagfactory

    ours = factory.load_fleet(snapshot_path=snapshot).dags
    plain = _plain(read_arguments(arguments_path))
    namespace: dict[str, Any] = {}
    dagfactory.load_yaml_dags(namespace, config_filepath=str(yaml_path))
    from_yaml = {d.dag_id: d for d in namespace.values() if isinstance(d, DAG)}
    ids = sorted(ours)[:sample]
    if set(ours) != set(plain) or set(ours) != set(from_yaml):
        raise SystemExit(f"different DAG ids: ours {len(ours)}, plain {len(plain)}, dag-factory {len(from_yaml)}")

    def shape(dag: DAG) -> dict[str, Any]:
        data = DagSerialization.to_dict(dag)["dag"]
        data.pop("fileloc", None)
        data.pop("relative_fileloc", None)
        for task in data.get("tasks", []):
            task.get("__var", task).pop("template_fields_renderers", None)
        return data

    for dag_id in ids:
        mine = shape(ours[dag_id])
        for name, other in (("plain", plain), ("dag-factory", from_yaml)):
            theirs = shape(other[dag_id])
            if name == "dag-factory":  # what its YAML cannot set (see DAGFACTORY_CANNOT_SET)
                mine = {k: v for k, v in mine.items() if k not in DAGFACTORY_CANNOT_SET}
                theirs = {k: v for k, v in theirs.items() if k not in DAGFACTORY_CANNOT_SET}
                theirs["tags"] = [t for t in theirs.get("tags", []) if t != "dagfactory"]
                if str(theirs.get("doc_md", "")).startswith(str(mine.get("doc_md"))):
                    theirs["doc_md"] = mine.get("doc_md")  # it appends the DAG's YAML to the doc
            if mine != theirs:
                diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
                raise SystemExit(f"{dag_id}: {name} built a different DAG (keys {diff})")
    return len(ids)


def ensure_dagfactory() -> None:
    if (DAGFACTORY_DIR / "dagfactory").is_dir():
        return
    requirements = REPO / "bench" / "requirements-dagfactory.txt"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(DAGFACTORY_DIR),
            "-r",
            str(requirements),
        ],
        check=True,
    )


def write_yaml(snapshot: Path, configs: int) -> Path:
    import yaml

    path = WORK_DIR / f"dagfactory-{configs}.yaml"
    if not path.exists():
        path.write_text(yaml.safe_dump(_yaml_config(_dag_arguments(snapshot)), sort_keys=False))
    return path


def run_child(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=False, timeout=3600
    )
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    raise SystemExit(f"child {args} failed (rc {proc.returncode}):\n{proc.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="1000,10000,50000")
    parser.add_argument(
        "--repeats",
        default="7,3,1",
        help="fresh processes per variant: one number, or one per size (dag-factory takes minutes at 50,000)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--check", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--snapshot", help=argparse.SUPPRESS)
    parser.add_argument("--yaml", help=argparse.SUPPRESS)
    parser.add_argument("--arguments", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.check:
        compared = check_same_dags(Path(args.snapshot), Path(args.yaml), Path(args.arguments))
        print(RESULT_MARK + json.dumps({"compared": compared}))
        return
    if args.child:
        print(RESULT_MARK + json.dumps(child(args.child, Path(args.snapshot), Path(args.yaml), Path(args.arguments))))
        return

    ensure_dagfactory()
    sizes = [int(c) for c in args.configs.split(",")]
    repeats = [int(r) for r in args.repeats.split(",")]
    repeats += [repeats[-1]] * (len(sizes) - len(repeats))
    rows = []
    for configs, size_repeats in zip(sizes, repeats, strict=False):
        snapshot, info = ensure_snapshot(configs)
        env = airflow_env(snapshot, 1)
        os.environ.update({k: v for k, v in env.items() if k.startswith(("CP_", "AIRFLOW"))})
        yaml_path = write_yaml(snapshot, configs)
        arguments_path = write_arguments(snapshot, configs)
        common = ["--snapshot", str(snapshot), "--yaml", str(yaml_path), "--arguments", str(arguments_path)]
        compared = run_child(["--check", *common], env)["compared"]
        runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
        for _ in range(size_repeats):
            for variant in VARIANTS:  # interleaved, so a noisy minute hits all three alike
                runs[variant].append(run_child(["--child", variant, *common], env))
        row: dict[str, Any] = {"configs": info["configs"], "repeats": size_repeats, "sample_compared": compared}
        for variant in VARIANTS:
            row[variant] = {
                "dags": runs[variant][0]["dags"],
                "ms_per_dag": statistics.median(r["ms_per_dag"] for r in runs[variant]),
                "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[variant]),
                "runs": runs[variant],
            }
        plain = row["plain"]["ms_per_dag"]
        row["ours_vs_plain"] = row["ours"]["ms_per_dag"] / plain
        row["ours_vs_plain_paused"] = row["ours"]["ms_per_dag"] / row["plain_paused"]["ms_per_dag"]
        row["dagfactory_vs_plain"] = row["dagfactory"]["ms_per_dag"] / plain
        rows.append(row)
        print(
            f"{row['configs']:>7,} configs  ms/DAG: plain {plain:.2f}, plain paused "
            f"{row['plain_paused']['ms_per_dag']:.2f}, ours {row['ours']['ms_per_dag']:.2f} "
            f"({row['ours_vs_plain']:.2f}x; {row['ours_vs_plain_paused']:.2f}x paused), "
            f"dag-factory {row['dagfactory']['ms_per_dag']:.2f} "
            f"({row['dagfactory_vs_plain']:.2f}x)  peak RSS MB: plain {row['plain']['peak_rss_mb']:.0f}, "
            f"ours {row['ours']['peak_rss_mb']:.0f}, dag-factory {row['dagfactory']['peak_rss_mb']:.0f}",
            flush=True,
        )
    print(
        "\n| configs (runs, median) | ms/DAG plain | plain, collector paused | ours (vs plain; vs paused) "
        "| dag-factory (vs plain) | peak RSS MB plain / ours / d-f |"
    )
    print("|---|---|---|---|---|---|")
    for row in rows:
        plain, ours, other = row["plain"], row["ours"], row["dagfactory"]
        print(
            f"| {row['configs']:,} ({row['repeats']}) | {plain['ms_per_dag']:.2f} "
            f"| {row['plain_paused']['ms_per_dag']:.2f} "
            f"| {ours['ms_per_dag']:.2f} ({row['ours_vs_plain']:.2f}x; {row['ours_vs_plain_paused']:.2f}x) "
            f"| {other['ms_per_dag']:.2f} ({row['dagfactory_vs_plain']:.2f}x) "
            f"| {plain['peak_rss_mb']:.0f} / {ours['peak_rss_mb']:.0f} / {other['peak_rss_mb']:.0f} |"
        )
    worst = max(row["ours_vs_plain"] for row in rows)
    own = max(row["ours_vs_plain_paused"] for row in rows)
    print(f"\ngoal: ours at most 1.25x the plain loop: {'met' if worst <= 1.25 else 'NOT met'} (worst {worst:.2f}x)")
    print(f"ours against the plain loop with the collector paused as ours pauses it: worst {own:.2f}x")
    out = REPO / "bench" / "results" / "factory_cost.json"
    out.write_text(json.dumps({"when": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
