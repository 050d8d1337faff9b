"""Airflow 3.3's components (scheduler, dag-processor, triggerer, API server) as local processes
on PostgreSQL with the LocalExecutor, configured entirely through environment variables."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

from customer_pipelines.local.processes import http_ok, read_pid, spawn, stop, wait_until
from customer_pipelines.settings import REPO_ROOT, Settings

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
ADMIN_USER = "admin"


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def api_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.airflow_port}"


def _secret(path: Path, make) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(make())
        path.chmod(0o600)
    return path.read_text().strip()


def admin_password(settings: Settings) -> str:
    """The demo's admin password: generated once, kept in the state directory."""
    passwords = settings.state_dir / "airflow" / "passwords.json"
    if not passwords.exists():
        passwords.parent.mkdir(parents=True, exist_ok=True)
        passwords.write_text(json.dumps({ADMIN_USER: secrets.token_urlsafe(12)}))
        passwords.chmod(0o600)
    return json.loads(passwords.read_text())[ADMIN_USER]


def airflow_env(
    settings: Settings, metadata_db_url: str, *, parallelism: int = 8, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """Environment shared by every Airflow process of the stack (and the CLI commands run on it)."""
    home = settings.state_dir / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    admin_password(settings)
    # Your own AIRFLOW__SECTION__KEY variables apply (a heartbeat timeout, say), except those the
    # stack sets below; AIRFLOW_HOME and the like are the stack's own.
    base = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") or k.startswith("AIRFLOW__")}
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT / "plugins"), base.get("PYTHONPATH", "")) if p)
    env = {
        **base,
        "PYTHONPATH": pythonpath,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url(settings)}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__FERNET_KEY": _secret(home / "fernet.key", _fernet_key),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_db_url.replace("postgresql://", "postgresql+psycopg2://", 1),
        "AIRFLOW__API__BASE_URL": api_url(settings),
        "AIRFLOW__API__PORT": str(settings.airflow_port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API_AUTH__JWT_SECRET": _secret(home / "jwt.secret", lambda: secrets.token_urlsafe(32)),
        # New DAG files and changed snapshots are seen within seconds, not minutes.
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "20",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "15",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "CP_STATE_DIR": str(settings.state_dir),
        "CP_BQ_PROJECT": settings.bq_project,
        "CP_BQ_DATASET": settings.bq_dataset,
        "CP_BQ_DATA_DATASET": settings.bq_data_dataset,
        "CP_BQ_LOCATION": settings.bq_location,
        "CP_AIRFLOW_PORT": str(settings.airflow_port),
        "CP_SYNC_INTERVAL_SECONDS": str(settings.sync_interval_seconds),
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
    env.update(extra or {})
    return env


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def run_cli(env: dict[str, str], *args: str, timeout: float = 600) -> str:
    proc = subprocess.run([airflow_bin(), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(
            f"airflow {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def migrate(env: dict[str, str]) -> None:
    run_cli(env, "db", "migrate")


def start(
    settings: Settings, env: dict[str, str], *, components: tuple[str, ...] = COMPONENTS, timeout: float = 180
) -> None:
    run_dir = settings.state_dir / "run"
    for component in components:
        name = f"airflow-{component}"
        if read_pid(run_dir / f"{name}.pid") is None:
            argv = [airflow_bin(), component]
            spawn(name, argv, run_dir=run_dir, env=env)
    if "api-server" in components:
        wait_until(
            lambda: http_ok(f"{api_url(settings)}/api/v2/monitor/health"),
            timeout=timeout,
            what="Airflow API server",
            log_file=run_dir / "airflow-api-server.log",
        )


def stop_all(settings: Settings) -> list[str]:
    run_dir = settings.state_dir / "run"
    return [c for c in COMPONENTS if stop(f"airflow-{c}", run_dir)]
