"""scripts/compose_env.py: the compose stack's secrets, generated once into an env file."""

from __future__ import annotations

import base64
import importlib.util
import stat
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "compose_env.py"


def _module():
    spec = importlib.util.spec_from_file_location("compose_env", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _values(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_it_writes_every_secret_strong_and_readable_by_its_owner_only(tmp_path):
    env = tmp_path / ".env"
    out = subprocess.run([sys.executable, str(SCRIPT), str(env)], capture_output=True, text=True, check=True)
    values = _values(env)
    assert set(values) == {
        "AIRFLOW_JWT_SECRET",
        "AIRFLOW_FERNET_KEY",
        "POSTGRES_PASSWORD",
        "FLOWER_BASIC_AUTH",
        "AIRFLOW_ADMIN_PASSWORD",
    }
    assert "generated" in out.stdout
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert len(values["AIRFLOW_JWT_SECRET"]) >= 64
    assert len(base64.urlsafe_b64decode(values["AIRFLOW_FERNET_KEY"])) == 32  # what Fernet requires
    user, _, password = values["FLOWER_BASIC_AUTH"].partition(":")
    assert user and len(password) >= 32
    second = tmp_path / "second.env"
    subprocess.run([sys.executable, str(SCRIPT), str(second)], check=True, capture_output=True)
    assert not set(_values(second).values()) & set(values.values())  # fresh randomness each time


def test_running_it_again_keeps_what_is_set_and_fills_only_what_is_missing_or_empty(tmp_path):
    env = tmp_path / ".env"
    env.write_text("CP_BQ_PROJECT=acme\nAIRFLOW_JWT_SECRET=mine-already\nPOSTGRES_PASSWORD=\n")
    added = _module().write_env(env)
    assert added == ["AIRFLOW_FERNET_KEY", "POSTGRES_PASSWORD", "AIRFLOW_ADMIN_PASSWORD", "FLOWER_BASIC_AUTH"]
    values = _values(env)
    assert values["CP_BQ_PROJECT"] == "acme" and values["AIRFLOW_JWT_SECRET"] == "mine-already"
    assert values["POSTGRES_PASSWORD"]
    before = env.read_text()
    assert _module().write_env(env) == []
    assert env.read_text() == before
