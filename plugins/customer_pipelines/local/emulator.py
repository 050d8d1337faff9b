"""The BigQuery emulator (``bqemulator``) as a persistent local service.

It runs from its own virtualenv (its pins clash with Airflow's). DuckDB's spatial extension, which
it would download at start-up, is copied from the ``duckdb-extension-spatial`` wheel into the
emulator's own HOME, so nothing is fetched from the web.

A second instance can serve the data plane (``Settings.data_emulator_port``): its own name, ports,
data and home directories under the state directory, and the data plane's project."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from customer_pipelines.local.processes import (
    ensure_port_free,
    http_ok,
    read_pid,
    spawn,
    stop,
    verify_listener,
    wait_until,
)
from customer_pipelines.private_files import ensure_state_dir, private_dir
from customer_pipelines.settings import REPO_ROOT, Plane, Settings

NAME = "bigquery-emulator"
DATA_NAME = "bigquery-emulator-data"
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
    private_dir(target.parent)
    shutil.copyfile(found[0], target)


@dataclass(frozen=True)
class EmulatorInstance:
    """One plane's emulator: the process name (pid and log files), ports, directories, project."""

    name: str
    port: int
    grpc_port: int
    root: Path
    project: str


def instance(settings: Settings, plane: Plane = "control") -> EmulatorInstance:
    if plane == "control":
        root = settings.state_dir / "bigquery"
        return EmulatorInstance(NAME, settings.emulator_port, settings.emulator_grpc_port, root, settings.bq_project)
    if settings.data_emulator_port is None or settings.data_emulator_grpc_port is None:
        raise ValueError("the data plane's emulator needs CP_DATA_EMULATOR_PORT and CP_DATA_EMULATOR_GRPC_PORT")
    return EmulatorInstance(
        DATA_NAME,
        settings.data_emulator_port,
        settings.data_emulator_grpc_port,
        settings.state_dir / "bigquery-data",
        settings.data_plane_project,
    )


def emulator_url(settings: Settings, plane: Plane = "control") -> str:
    return f"http://127.0.0.1:{instance(settings, plane).port}"


def is_ready(settings: Settings, plane: Plane = "control") -> bool:
    project = instance(settings, plane).project
    return http_ok(f"{emulator_url(settings, plane)}/bigquery/v2/projects/{project}/datasets")


def start(settings: Settings, *, timeout: float = 60.0, plane: Plane = "control") -> float:
    """Start a plane's emulator unless the stack's own already runs; returns the seconds it took to be
    ready. Only an emulator this stack started is used: its ports taken by any other process are an
    error naming the port, never a service to trust."""
    began = time.monotonic()
    ensure_state_dir(settings.state_dir)
    run_dir = settings.state_dir / "run"
    emulator = instance(settings, plane)
    what = f"BigQuery emulator ({plane} plane)"
    pid = read_pid(run_dir / f"{emulator.name}.pid")
    if pid is not None and is_ready(settings, plane):
        verify_listener(emulator.port, pid, what)
        return 0.0
    if pid is None:
        pid = _spawn(emulator, run_dir, what)
    wait_until(
        lambda: is_ready(settings, plane),
        timeout=timeout,
        what=what,
        log_file=run_dir / f"{emulator.name}.log",
    )
    verify_listener(emulator.port, pid, what)
    return time.monotonic() - began


def _spawn(emulator: EmulatorInstance, run_dir: Path, what: str) -> int:
    for port in (emulator.port, emulator.grpc_port):
        ensure_port_free(port, what)
    home = emulator.root / "home"
    data = emulator.root / "data"
    private_dir(data)
    private_dir(home)
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
        str(emulator.port),
        "--grpc-host",
        "127.0.0.1",
        "--grpc-port",
        str(emulator.grpc_port),
        "--project",
        emulator.project,
        "--log-format",
        "console",
        "--log-level",
        "warning",
    ]
    return spawn(emulator.name, argv, run_dir=run_dir, env=env)


def stop_emulator(settings: Settings, plane: Plane = "control") -> bool:
    return stop(instance(settings, plane).name, settings.state_dir / "run")


def running_pid(settings: Settings, plane: Plane = "control") -> int | None:
    return read_pid(settings.state_dir / "run" / f"{instance(settings, plane).name}.pid")
