"""The BigQuery emulator (``bqemulator``) as a persistent local service.

It runs from its own virtualenv (its pins clash with Airflow's). DuckDB's spatial extension, which
it would download at start-up, is copied from the ``duckdb-extension-spatial`` wheel into the
emulator's own HOME, so nothing is fetched from the web."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from customer_pipelines.local.processes import http_ok, read_pid, spawn, stop, wait_until
from customer_pipelines.settings import REPO_ROOT, Settings

NAME = "bigquery-emulator"
DUCKDB_VERSION = "v1.5.5"


def emulator_venv() -> Path:
    return Path(os.environ.get("CP_EMULATOR_VENV", REPO_ROOT / ".venv-bq"))


def _install_spatial_extension(home: Path) -> None:
    target = home / ".duckdb" / "extensions" / DUCKDB_VERSION / "linux_amd64" / "spatial.duckdb_extension"
    if target.exists():
        return
    found = sorted(
        emulator_venv().glob(
            f"lib/python*/site-packages/duckdb_extension_spatial/extensions/{DUCKDB_VERSION}/spatial.duckdb_extension"
        )
    )
    if not found:
        raise FileNotFoundError(
            f"DuckDB spatial extension not found in {emulator_venv()}: run `make install` "
            "(it installs duckdb-extension-spatial into the emulator's virtualenv)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(found[0], target)


def emulator_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.emulator_port}"


def is_ready(settings: Settings) -> bool:
    return http_ok(f"{emulator_url(settings)}/bigquery/v2/projects/{settings.bq_project}/datasets")


def start(settings: Settings, *, timeout: float = 60.0) -> float:
    """Start the emulator unless it already answers; returns the seconds it took to be ready."""
    began = time.monotonic()
    run_dir = settings.state_dir / "run"
    if is_ready(settings):
        return 0.0
    home = settings.state_dir / "bigquery" / "home"
    data = settings.state_dir / "bigquery" / "data"
    data.mkdir(parents=True, exist_ok=True)
    _install_spatial_extension(home)
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
    }
    argv = [
        str(emulator_venv() / "bin" / "bqemulator"),
        "start",
        "--persistent",
        "--data-dir",
        str(data),
        "--rest-host",
        "127.0.0.1",
        "--rest-port",
        str(settings.emulator_port),
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        str(settings.emulator_grpc_port),
        "--project",
        settings.bq_project,
        "--log-format",
        "console",
        "--log-level",
        "warning",
    ]
    spawn(NAME, argv, run_dir=run_dir, env=env)
    wait_until(lambda: is_ready(settings), timeout=timeout, what="BigQuery emulator", log_file=run_dir / f"{NAME}.log")
    return time.monotonic() - began


def stop_emulator(settings: Settings) -> bool:
    return stop(NAME, settings.state_dir / "run")


def running_pid(settings: Settings) -> int | None:
    return read_pid(settings.state_dir / "run" / f"{NAME}.pid")
