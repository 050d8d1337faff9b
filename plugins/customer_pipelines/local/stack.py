"""The whole embedded system in one call: emulator + schema + demo data, PostgreSQL, Airflow's
components and the fleet syncer. ``make demo`` runs ``python -m customer_pipelines stack up``."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass, field

from customer_pipelines.local import airflow as local_airflow
from customer_pipelines.local import broker, emulator, postgres
from customer_pipelines.local.environment import record_stack_environment
from customer_pipelines.local.processes import ensure_port_free, read_pid, spawn, stop
from customer_pipelines.private_files import OWNER_ONLY_UMASK, ensure_state_dir
from customer_pipelines.settings import PLANES, REPO_ROOT, Plane, Settings

SYNCER = "customer-pipelines-syncer"
SYNCER_COMMAND = ("sync", "--loop")
"""``python -m customer_pipelines`` arguments of the syncer (docker-compose.yaml's syncer service)."""
QUOTA_DATABASE = "customer_pipelines"
AIRFLOW_DATABASE = "airflow"


@dataclass
class StackInfo:
    settings: Settings
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ui_url(self) -> str:
        return local_airflow.api_url(self.settings)


def with_embedded_defaults(settings: Settings) -> Settings:
    """The embedded default: the local emulator unless real BigQuery is configured explicitly, and
    a second one for the data plane when ``data_emulator_port`` is set."""
    updates: dict[str, object] = {}
    if not settings.bigquery_emulator_host and not settings.real_bigquery:
        updates["bigquery_emulator_host"] = f"127.0.0.1:{settings.emulator_port}"
    if settings.data_emulator_port and not settings.data_bigquery_emulator_host and not settings.real_bigquery:
        updates["data_bigquery_emulator_host"] = f"127.0.0.1:{settings.data_emulator_port}"
    return settings.model_copy(update=updates)


def _runs_emulator(settings: Settings, plane: Plane) -> bool:
    """Whether this stack runs the plane's emulator: the plane's host is the local port set for it."""
    if plane == "data":
        host, port = settings.data_bigquery_emulator_host, settings.data_emulator_port
    else:
        host, port = settings.bigquery_emulator_host, settings.emulator_port
    return bool(port and host and host.endswith(f":{port}"))


def prepare(settings: Settings, *, seed_demo: bool = True) -> StackInfo:
    """Everything but Airflow's long-running components: data services, schema, demo, migration."""
    timings: dict[str, float] = {}
    settings = with_embedded_defaults(settings)
    # Before anything is read from it: a directory another user created or may write is refused.
    ensure_state_dir(settings.state_dir)
    if _runs_emulator(settings, "control"):
        timings["emulator_start"] = emulator.start(settings)
    if _runs_emulator(settings, "data"):
        timings["data_emulator_start"] = emulator.start(settings, plane="data")

    began = time.monotonic()
    server = postgres.start(settings)
    timings["postgres_start"] = time.monotonic() - began
    metadata_url = postgres.ensure_database(server, AIRFLOW_DATABASE)
    if settings.executor == "CeleryExecutor":
        broker.start(settings)
    if not settings.quota_db_url:
        settings = settings.model_copy(update={"quota_db_url": postgres.ensure_database(server, QUOTA_DATABASE)})
    env = local_airflow.airflow_env(settings, metadata_url)
    # Before the first command runs: commands run by hand (and this stack's own) read these.
    record_stack_environment(env, settings.state_dir)

    began = time.monotonic()
    run_module(env, "schema", "apply")
    timings["schema_apply"] = time.monotonic() - began
    if seed_demo:
        began = time.monotonic()
        run_module(env, "seed", "demo")
        timings["seed_demo"] = time.monotonic() - began
    began = time.monotonic()
    local_airflow.migrate(env, settings)
    timings["airflow_db_migrate"] = time.monotonic() - began
    began = time.monotonic()
    run_module(env, "sync")
    timings["first_sync"] = time.monotonic() - began
    return StackInfo(settings, env, timings)


def stack_ports(
    settings: Settings, components: tuple[str, ...] = local_airflow.COMPONENTS
) -> list[tuple[int, str, str]]:
    """The TCP ports the stack's services listen on: (port, what, process name of the pid file).
    PostgreSQL has none (a Unix socket); the scheduler's health check keeps Airflow's port (8974), not
    checked here (Airflow's setting, not the stack's)."""
    settings = with_embedded_defaults(settings)
    ports = []
    for plane in PLANES:
        if _runs_emulator(settings, plane):
            emu = emulator.instance(settings, plane)
            ports += [(p, f"BigQuery emulator ({plane} plane)", emu.name) for p in (emu.port, emu.grpc_port)]
    if "api-server" in components:
        ports.append((settings.airflow_port, "Airflow API server", "airflow-api-server"))
    if settings.executor == "CeleryExecutor" and not settings.redis_url:
        ports.append((settings.redis_port, "Redis", broker.NAME))
    return ports


def check_ports(settings: Settings, components: tuple[str, ...] = local_airflow.COMPONENTS) -> None:
    """Before anything starts: each port of a service the stack is about to start must be free (a
    service already running is the stack's own when its pid file names a live process; that
    process's ownership of the port is checked once it answers)."""
    run_dir = settings.state_dir / "run"
    for port, what, name in stack_ports(settings, components):
        if read_pid(run_dir / f"{name}.pid") is None:
            ensure_port_free(port, what)


def up(settings: Settings, *, seed_demo: bool = True, components: tuple[str, ...] | None = None) -> StackInfo:
    ensure_state_dir(settings.state_dir)
    components = local_airflow.components_of(settings) if components is None else components
    check_ports(settings, components)
    info = prepare(settings, seed_demo=seed_demo)
    began = time.monotonic()
    local_airflow.start(info.settings, info.env, components=components)
    run_dir = info.settings.state_dir / "run"
    if read_pid(run_dir / f"{SYNCER}.pid") is None:
        spawn(
            SYNCER,
            [sys.executable, "-m", "customer_pipelines", *SYNCER_COMMAND],
            run_dir=run_dir,
            env=info.env,
            cwd=REPO_ROOT,
        )
    info.timings["airflow_start"] = time.monotonic() - began
    return info


def down(settings: Settings) -> list[str]:
    settings = with_embedded_defaults(settings)
    stopped = []
    if stop(SYNCER, settings.state_dir / "run"):
        stopped.append(SYNCER)
    stopped += [f"airflow-{c}" for c in local_airflow.stop_all(settings)]
    if emulator.stop_emulator(settings):
        stopped.append(emulator.NAME)
    if _runs_emulator(settings, "data") and emulator.stop_emulator(settings, plane="data"):
        stopped.append(emulator.DATA_NAME)
    if broker.stop_redis(settings):
        stopped.append(broker.NAME)
    if postgres.stop(settings):
        stopped.append("postgres")
    return stopped


def run_module(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    """Run ``python -m customer_pipelines <args>`` with the stack's environment."""
    proc = subprocess.run(
        [sys.executable, "-m", "customer_pipelines", *args],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        umask=OWNER_ONLY_UMASK,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"customer_pipelines {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return proc.stdout
