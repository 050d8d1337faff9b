"""Airflow 3.3's components (scheduler, dag-processor, triggerer, API server, and Celery workers with
the CeleryExecutor) as local processes on PostgreSQL, configured entirely through environment
variables."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from customer_pipelines.fleet.parsing import (
    BUNDLE_REFRESH_SECONDS,
    PERIODIC_REPARSE_SECONDS,
    SERIALIZED_DAG_MIN_UPDATE_SECONDS,
)
from customer_pipelines.local.airflow_api import AirflowClient
from customer_pipelines.local.processes import (
    PortError,
    ensure_port_free,
    http_ok,
    read_pid,
    spawn,
    stop,
    verify_listener,
    wait_until,
)
from customer_pipelines.private_files import (
    OWNER_ONLY_UMASK,
    check_private_dir,
    ensure_state_dir,
    private_dir,
    write_private,
)
from customer_pipelines.settings import REPO_ROOT, Settings

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN_USER = "admin"
CELERY_WORKER = "celery-worker"
"""Component name of the stack's Celery workers: ``celery-worker-1``, ``celery-worker-2``, ..."""


def components_of(settings: Settings) -> tuple[str, ...]:
    """The Airflow components the local stack runs: docker-compose.yaml's services, as processes."""
    if settings.executor == "CeleryExecutor":
        return COMPONENTS + tuple(f"{CELERY_WORKER}-{n}" for n in range(1, settings.celery_workers + 1))
    return COMPONENTS


def component_command(component: str) -> tuple[str, ...]:
    """The ``airflow`` sub-command a component runs: docker-compose.yaml's service ``command`` (a
    test holds the two together)."""
    return ("celery", "worker") if component.startswith(f"{CELERY_WORKER}-") else (component,)


def component_argv(settings: Settings, component: str) -> list[str]:
    """The ``airflow`` command line of a component: its sub-command and the options a process on a
    shared host needs."""
    argv = [airflow_bin(), *component_command(component)]
    if component.startswith(f"{CELERY_WORKER}-"):
        # Two workers on one host need two Celery node names; their log servers would share a port
        # and bind every interface: off (the API server reads the task logs from the local folder).
        number = component.rsplit("-", 1)[1]
        options = ["--celery-hostname", f"worker{number}@%h", "--concurrency", str(settings.celery_worker_concurrency)]
        return [*argv, *options, "--skip-serve-logs"]
    return [*argv, *(["--skip-serve-logs"] if component in _SKIP_SERVE_LOGS else [])]


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def api_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.airflow_port}"


def _secret(path: Path, make: Callable[[], str]) -> str:
    """A secret kept in the state directory: created owner-only (never readable by others, not even
    for a moment), generated once."""
    if not path.exists():
        private_dir(path.parent)
        write_private(path, make())
    return path.read_text().strip()


def admin_password(settings: Settings) -> str:
    """The demo's admin password: generated once, kept in the state directory (refused when that
    directory is not this user's own, see :func:`~customer_pipelines.private_files.check_private_dir`)."""
    check_private_dir(settings.state_dir)
    passwords = settings.state_dir / "airflow" / "passwords.json"
    return json.loads(_secret(passwords, lambda: json.dumps({ADMIN_USER: secrets.token_urlsafe(12)})))[ADMIN_USER]


BURST_SETTINGS: dict[str, str] = {
    # Airflow's settings that pace a burst of runs due at one tick (bench/burst.py measured them; the
    # README's *Burst* section has the figures). docker-compose.yaml ships the same values, and a
    # test holds the three together. Your own AIRFLOW__... variables override them.
    # Tasks at once (Airflow's default 32): our tasks wait on BigQuery and the quota ledger, so twice
    # the cores' worth keeps both cores busy; more only adds memory and contention.
    "AIRFLOW__CORE__PARALLELISM": "16",
    # Runs created per scheduler loop (default 10): 200 runs due at one tick were created over 54 s,
    # ten per loop of a scheduler sharing its cores with the tasks; at 100, over 8 s.
    "AIRFLOW__SCHEDULER__MAX_DAGRUNS_TO_CREATE_PER_LOOP": "100",
    # Runs examined per loop for tasks to schedule (default 20) and task instances queued per loop
    # (default 16): at the defaults a loop fed the executor fewer tasks than finished in it.
    "AIRFLOW__SCHEDULER__MAX_DAGRUNS_PER_LOOP_TO_SCHEDULE": "100",
    "AIRFLOW__SCHEDULER__MAX_TIS_PER_QUERY": "64",
    # One API server worker (Airflow's default): the Execution API is asynchronous, and a second
    # worker is another ~300 MB for no gain on 2 cores (measured: all done 86 s either way).
    "AIRFLOW__API__WORKERS": "1",
}


def airflow_env(settings: Settings, metadata_db_url: str, *, extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment shared by every Airflow process of the stack (and the CLI commands run on it)."""
    home = private_dir(ensure_state_dir(settings.state_dir) / "airflow")
    admin_password(settings)
    # Your own AIRFLOW__SECTION__KEY variables apply (a heartbeat timeout, say, or one of the burst
    # settings), except those the stack sets below; AIRFLOW_HOME and the like are the stack's own.
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") or k.startswith("AIRFLOW__")}
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT / "plugins"), base.get("PYTHONPATH", "")) if p)
    env = {
        **BURST_SETTINGS,
        **base,
        "PYTHONPATH": pythonpath,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url(settings)}/execution/",
        **_auth_manager_env(settings, home),
        "AIRFLOW__CORE__FERNET_KEY": _secret(home / "fernet.key", _fernet_key),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        "AIRFLOW__API__BASE_URL": api_url(settings),
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home / "jwt.secret", lambda: secrets.token_urlsafe(32)),
        # Change-driven parsing: a shard file is parsed again when the syncer, the API or the command
        # line asks for it (fleet/parsing.py), within seconds; the timer only converges a request
        # that was lost, so it is long and the DAG processor rests between changes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": str(BUNDLE_REFRESH_SECONDS),
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": str(PERIODIC_REPARSE_SECONDS),
        # A parse a change asked for publishes it, however soon after the DAG's last write.
        "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": str(SERIALIZED_DAG_MIN_UPDATE_SECONDS),
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        # Loopback only (Airflow's default is every interface). The log servers have no host setting
        # in Airflow 3.3 (they bind every interface): the scheduler and triggerer run without them
        # (--skip-serve-logs), and the API server reads the task logs from the shared local folder.
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        # Task and DAG-processor logs owner-only (Airflow chmods them to 0664/0775 by default).
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS": "0o600",
        "AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS": "0o700",
        "CP_STATE_DIR": str(settings.state_dir),
        "CP_BQ_PROJECT": settings.bq_project,
        "CP_BQ_DATASET": settings.bq_dataset,
        "CP_BQ_DATA_DATASET": settings.bq_data_dataset,
        "CP_BQ_LOCATION": settings.bq_location,
        "CP_AIRFLOW_PORT": str(settings.airflow_port),
        "CP_SYNC_INTERVAL_SECONDS": str(settings.sync_interval_seconds),
        "CP_FLEET_SHARDS": str(settings.fleet_shards),
    }
    if settings.bigquery_emulator_host:
        env["BIGQUERY_EMULATOR_HOST"] = settings.bigquery_emulator_host
    data_plane = {
        "CP_DATA_GCP_CONN_ID": settings.data_gcp_conn_id,
        "CP_DATA_BQ_PROJECT": settings.data_bq_project,
        "CP_DATA_BIGQUERY_EMULATOR_HOST": settings.data_bigquery_emulator_host,
        "CP_DATA_EMULATOR_PORT": settings.data_emulator_port,
        "CP_DATA_EMULATOR_GRPC_PORT": settings.data_emulator_grpc_port,
    }
    env.update({name: str(value) for name, value in data_plane.items() if value is not None})
    if settings.quota_db_url:
        env["CP_QUOTA_DB_URL"] = settings.quota_db_url
    if settings.snapshot_store_url:
        env.update(snapshot_store_env(settings))
    if settings.executor == "CeleryExecutor":
        from customer_pipelines.local import broker

        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__CELERY__BROKER_URL": broker.url(settings),
                # Celery's task results in the metadata database, as docker-compose.yaml has them.
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata_db_url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(settings.celery_worker_concurrency),
                "CP_EXECUTOR": "CeleryExecutor",
                "CP_CELERY_WORKERS": str(settings.celery_workers),
                "CP_REDIS_PORT": str(settings.redis_port),
            }
        )
    env.update(extra or {})
    return env


SNAPSHOT_BUNDLE = "customer_pipelines.fleet.bundle.SnapshotDagBundle"


def snapshot_store_env(settings: Settings) -> dict[str, str]:
    """With a snapshot store: the DAGs folder as the bundle versioned by snapshot generation
    (fleet/bundle.py), under Airflow's default bundle name, so DAGs keep their identity."""
    from customer_pipelines.fleet.parsing import DEFAULT_BUNDLE

    bundles = [{"name": DEFAULT_BUNDLE, "classpath": SNAPSHOT_BUNDLE, "kwargs": {"path": str(REPO_ROOT / "dags")}}]
    return {
        "CP_SNAPSHOT_STORE_URL": str(settings.snapshot_store_url),
        "CP_SNAPSHOT_STORE_KEEP_HOURS": str(settings.snapshot_store_keep_hours),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
    }


HOSTS_DIR = "hosts"
"""In the state directory: with a snapshot store, the DAG processor's and each Celery worker's own
state directory (``hosts/<component>``), as if each ran on a host of its own."""


def component_env(settings: Settings, env: dict[str, str], component: str) -> dict[str, str]:
    """A component's environment: the stack's, and with a snapshot store, for the DAG processor
    and the Celery workers, a state directory of their own (nothing of the syncer's is on their
    disk: they fetch the snapshot from the store)."""
    if not settings.snapshot_store_url or not (
        component == "dag-processor" or component.startswith(f"{CELERY_WORKER}-")
    ):
        return env
    own = private_dir(settings.state_dir / HOSTS_DIR / component)
    return {
        **env,
        "CP_STATE_DIR": str(own),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(private_dir(own / "bundles")),
    }


FAB_AUTH_MANAGER = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


def _auth_manager_env(settings: Settings, home: Path) -> dict[str, str]:
    if settings.auth_manager == "fab":
        return {"AIRFLOW__CORE__AUTH_MANAGER": FAB_AUTH_MANAGER, "CP_AUTH_MANAGER": "fab"}
    return {
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
    }


_CREATE_FAB_USER = """
import os, sys
from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder
name, role = os.environ["CP_FAB_USER"], os.environ["CP_FAB_ROLE"]
with get_application_builder() as builder:
    if builder.sm.find_user(username=name) is None:
        found = builder.sm.find_role(role)
        if found is None:
            sys.exit(f"no FAB role {role!r}: one of {[r.name for r in builder.sm.get_all_roles()]}")
        made = builder.sm.add_user(name, name, "user", f"{name}@localhost", found, os.environ["CP_FAB_PASSWORD"])
        sys.exit(0 if made else f"FAB user {name} not created")
"""


def create_fab_user(env: dict[str, str], username: str, password: str, role: str = "Admin") -> None:
    """A FAB user (once: an existing one is left as it is). The password goes through the
    environment of a process of ours, never a command line other users can read."""
    proc = subprocess.run(
        [sys.executable, "-c", _CREATE_FAB_USER],
        env={**env, "CP_FAB_USER": username, "CP_FAB_ROLE": role, "CP_FAB_PASSWORD": password},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        umask=OWNER_ONLY_UMASK,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"FAB user {username} ({role}) not created:\n{proc.stderr[-3000:]}")


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def run_cli(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    proc = subprocess.run(
        [airflow_bin(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        umask=OWNER_ONLY_UMASK,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def migrate(env: dict[str, str], settings: Settings | None = None) -> None:
    """Airflow's database (with FAB's tables when FAB is the auth manager), and FAB's admin with
    the stack's generated admin password."""
    run_cli(env, "db", "migrate")
    if settings is not None and settings.auth_manager == "fab":
        create_fab_user(env, ADMIN_USER, admin_password(settings))


# Components that would serve their task logs on every interface unless told not to.
_SKIP_SERVE_LOGS = ("scheduler", "triggerer")


def start(
    settings: Settings, env: dict[str, str], *, components: tuple[str, ...] | None = None, timeout: float = 180
) -> None:
    components = components_of(settings) if components is None else components
    run_dir = settings.state_dir / "run"
    pidfile = run_dir / "airflow-api-server.pid"
    if "api-server" in components and read_pid(pidfile) is None:
        # Before any component starts: a stranger on the API's port would get every call (and the password).
        ensure_port_free(settings.airflow_port, "Airflow API server")
    for component in components:
        name = f"airflow-{component}"
        if read_pid(run_dir / f"{name}.pid") is None:
            spawn(
                name, component_argv(settings, component), run_dir=run_dir, env=component_env(settings, env, component)
            )
    if "api-server" in components:
        wait_until(
            lambda: http_ok(f"{api_url(settings)}/api/v2/monitor/health"),
            timeout=timeout,
            what="Airflow API server",
            log_file=run_dir / "airflow-api-server.log",
        )
        verify_api_server(settings)


def verify_api_server(settings: Settings) -> None:
    """Raise unless the API's port is served by the API server this stack started (its pid file),
    so that the admin password goes to no other process."""
    pid = read_pid(settings.state_dir / "run" / "airflow-api-server.pid")
    if pid is None:
        raise PortError(
            f"the local stack's Airflow API server is not running (no live pid in {settings.state_dir / 'run'}): "
            "start it with `python -m customer_pipelines stack up`"
        )
    verify_listener(settings.airflow_port, pid, "Airflow API server")


def client(settings: Settings) -> AirflowClient:
    """A REST client logged in as the stack's admin, once the API's port is proven to be the stack's own."""
    verify_api_server(settings)
    return AirflowClient(api_url(settings), ADMIN_USER, admin_password(settings))


def stop_all(settings: Settings) -> list[str]:
    run_dir = settings.state_dir / "run"
    workers = sorted(p.name[len("airflow-") : -len(".pid")] for p in run_dir.glob(f"airflow-{CELERY_WORKER}-*.pid"))
    return [c for c in (*workers, *COMPONENTS) if stop(f"airflow-{c}", run_dir)]
