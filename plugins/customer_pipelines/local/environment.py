"""The local stack's settings, recorded in its state directory, so that every ``python -m
customer_pipelines`` command run by hand works against the running stack with the settings its own
processes get (its emulators, its PostgreSQL, Airflow's home, database and secrets), with nothing
to export, and never reads or creates ``~/airflow``.

``stack up`` records them (:func:`record_stack_environment`); the CLI applies them before anything
imports Airflow (:func:`apply_stack_environment`). The state directory is found the way the stack
finds it: ``CP_STATE_DIR``, else the default. A variable the user sets explicitly wins."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

from customer_pipelines.private_files import check_private_dir, write_private
from customer_pipelines.settings import default_state_dir

STACK_ENVIRONMENT_FILE = "stack-environment.json"


class StackEnvironmentError(RuntimeError):
    """The recorded settings of the stack exist but cannot be read."""


def stack_environment_file(state_dir: Path) -> Path:
    return state_dir / STACK_ENVIRONMENT_FILE


def is_stack_setting(name: str) -> bool:
    """The project's and Airflow's own variables; not the shell's (PATH, HOME, PYTHONPATH...)."""
    return name.startswith(("CP_", "AIRFLOW")) or name == "BIGQUERY_EMULATOR_HOST"


def record_stack_environment(env: Mapping[str, str], state_dir: Path) -> Path:
    """Write the stack's settings from ``env`` (the environment of its processes) to the state
    directory, readable by its owner only (it holds the metadata database URL, the Fernet key and
    the API's JWT secret); replaced atomically."""
    path = stack_environment_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    settings = {name: value for name, value in sorted(env.items()) if is_stack_setting(name)}
    write_private(path, json.dumps(settings, indent=2))
    return path


def apply_stack_environment(environ: MutableMapping[str, str], *, recorded: bool = True) -> Path | None:
    """Set in ``environ`` each recorded setting of the stack it does not set itself (``recorded``:
    False for ``stack up``, which records them afresh), and Airflow's home to the stack's even
    when nothing is recorded. Returns the file applied, if any. Call it before Airflow is imported:
    Airflow reads its configuration at import, from ``$AIRFLOW_HOME`` (default ``~/airflow``, which
    it creates)."""
    state_dir = Path(environ.get("CP_STATE_DIR") or default_state_dir())
    path = stack_environment_file(state_dir)
    applied = None
    if os.path.lexists(state_dir):
        # Its record and Airflow's home (airflow.cfg's *_cmd options run commands) are trusted only
        # in a directory of this user's own.
        check_private_dir(state_dir)
    if recorded and path.exists():
        try:
            settings = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StackEnvironmentError(f"the local stack's settings in {path} cannot be read: {exc}") from exc
        for name, value in settings.items():
            environ.setdefault(name, value)
        applied = path
    environ.setdefault("AIRFLOW_HOME", str(state_dir / "airflow"))
    return applied
