"""The local stack's state directory, file modes and ports (issue #19): a state directory another
user created or may write is refused before anything in it is read; what the stack writes is
owner-only; a port taken by another process stops `stack up` with its number; a port is trusted only
when the process the stack started listens on it."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from customer_pipelines.bigquery.store import RejectedRows
from customer_pipelines.local import airflow as local_airflow
from customer_pipelines.local import stack as local_stack
from customer_pipelines.local.environment import (
    apply_stack_environment,
    record_stack_environment,
)
from customer_pipelines.local.processes import PortError, ensure_port_free, listeners, spawn, verify_listener
from customer_pipelines.private_files import UnsafeStateDirError, check_private_dir, ensure_state_dir
from customer_pipelines.runs.mirror import RunStateMirror
from customer_pipelines.settings import REPO_ROOT, Settings
from customer_pipelines.snapshot import write_snapshot
from tests_support import free_port

NOBODY = 65534


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def planted(root: Path, *, owner: int | None = NOBODY, dir_mode: int = 0o755) -> Path:
    """A state directory as another local user would plant it: a chosen admin password, JWT secret,
    recorded settings and an airflow.cfg whose secret_key_cmd runs a command."""
    state = root / "state"
    (state / "airflow").mkdir(parents=True)
    (state / "airflow" / "passwords.json").write_text(json.dumps({"admin": "planted-password"}))
    (state / "airflow" / "jwt.secret").write_text("planted-jwt-secret")
    (state / "airflow" / "airflow.cfg").write_text(f"[api]\nsecret_key_cmd = touch {root / 'command-ran'}\n")
    (state / "stack-environment.json").write_text(json.dumps({"AIRFLOW__API_AUTH__JWT_SECRET": "planted-jwt-secret"}))
    if owner is not None:
        for path in (state, *state.rglob("*")):
            os.chown(path, owner, owner)
    state.chmod(dir_mode)
    return state


def settings_on(state: Path, **ports: int) -> Settings:
    return Settings(
        state_dir=state,
        emulator_port=ports.get("emulator_port", free_port()),
        emulator_grpc_port=ports.get("emulator_grpc_port", free_port()),
        airflow_port=ports.get("airflow_port", free_port()),
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
def test_a_state_directory_of_another_user_is_refused_before_anything_is_read(tmp_path, monkeypatch):
    state = planted(tmp_path)
    before = sorted(p.name for p in state.rglob("*"))

    with pytest.raises(UnsafeStateDirError, match=rf"state directory {state} .*belongs to another user"):
        local_stack.up(settings_on(state))
    with pytest.raises(UnsafeStateDirError, match="another user"):
        local_airflow.admin_password(settings_on(state))  # what demo-run would send to the API
    environ = {"CP_STATE_DIR": str(state)}
    with pytest.raises(UnsafeStateDirError, match="another user"):
        apply_stack_environment(environ)  # what every command run by hand does first
    assert environ == {"CP_STATE_DIR": str(state)}, "nothing recorded there was applied"
    assert sorted(p.name for p in state.rglob("*")) == before, "nothing was created or started in it"
    assert not (tmp_path / "command-ran").exists()


def test_a_state_directory_others_may_write_is_refused_even_when_it_is_ours(tmp_path):
    state = planted(tmp_path, owner=None, dir_mode=0o777)
    with pytest.raises(UnsafeStateDirError, match=r"mode 0777\) is refused: group or others may write"):
        local_stack.up(settings_on(state))
    with pytest.raises(UnsafeStateDirError, match="others may write"):
        apply_stack_environment({"CP_STATE_DIR": str(state)})
    assert not (state / "run").exists()


def test_a_state_directory_under_a_directory_others_may_write_is_refused_unless_sticky(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    state = shared / "state"
    state.mkdir(mode=0o700)
    shared.chmod(0o777)  # another user could rename our directory away and put theirs in its place
    with pytest.raises(UnsafeStateDirError, match=rf"{shared} .*writable by others without the sticky bit"):
        check_private_dir(state)
    shared.chmod(0o1777)  # as /tmp and /var/tmp: only the owner may rename it
    check_private_dir(state)


def test_a_symlink_as_state_directory_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (tmp_path / "state").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(UnsafeStateDirError, match="not a directory"):
        ensure_state_dir(tmp_path / "state")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UnsafeStateDirError, match="not a directory"):
        ensure_state_dir(tmp_path / "dangling")
    assert not (tmp_path / "nowhere").exists()


def test_our_own_state_directory_is_used_and_narrowed_to_0700(tmp_path):
    state = planted(tmp_path, owner=None, dir_mode=0o755)  # an older stack's directory
    settings = settings_on(state)
    assert local_airflow.admin_password(settings) == "planted-password"
    environ = {"CP_STATE_DIR": str(state)}
    assert apply_stack_environment(environ) == state / "stack-environment.json"
    assert environ["AIRFLOW__API_AUTH__JWT_SECRET"] == "planted-jwt-secret"
    assert ensure_state_dir(state) == state and mode(state) == 0o700
    fresh = ensure_state_dir(tmp_path / "new" / "state")
    assert mode(fresh) == 0o700


@pytest.fixture
def umask_zero() -> Iterator[None]:
    """No help from the umask: modes must come from how each file is created."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_the_stacks_secrets_settings_and_directories_are_created_owner_only(tmp_path, umask_zero):
    settings = settings_on(tmp_path / "state")
    env = local_airflow.airflow_env(settings, "postgresql://airflow@127.0.0.1/airflow")
    record_stack_environment(env, settings.state_dir)
    home = settings.state_dir / "airflow"
    assert (mode(settings.state_dir), mode(home)) == (0o700, 0o700)
    for name in ("passwords.json", "fernet.key", "jwt.secret"):
        assert mode(home / name) == 0o600, name
    assert mode(settings.state_dir / "stack-environment.json") == 0o600
    # Airflow's own logs and its health check: owner-only, loopback.
    assert env["AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FILE_PERMISSIONS"] == "0o600"
    assert env["AIRFLOW__LOGGING__FILE_TASK_HANDLER_NEW_FOLDER_PERMISSIONS"] == "0o700"
    assert env["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"


def test_a_process_of_the_stack_logs_owner_only_and_creates_owner_only_files(tmp_path, umask_zero):
    run_dir = tmp_path / "run"
    made = tmp_path / "made-by-the-child"
    pid = spawn("child", ["sh", "-c", f"echo started; mkdir {made}; touch {made}/file"], run_dir=run_dir, env={})
    deadline = time.monotonic() + 10
    while not (made / "file").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    os.waitpid(pid, 0)
    assert (mode(run_dir), mode(run_dir / "child.log"), mode(run_dir / "child.pid")) == (0o700, 0o600, 0o600)
    assert (run_dir / "child.log").read_text() == "started\n"
    assert (mode(made), mode(made / "file")) == (0o700, 0o600), "the child's umask is 077"


def test_the_snapshot_and_the_spool_are_written_owner_only(tmp_path, umask_zero):
    path = tmp_path / "snapshot" / "configs.sqlite"
    write_snapshot(path, [], [], source="test")
    write_snapshot(path, [], [], source="test")  # the second keeps the first as .prev
    assert (mode(path.parent), mode(path), mode(path.with_name(path.name + ".prev"))) == (0o700, 0o600, 0o600)

    class Down:
        """BigQuery refusing the first write (an outage), then one row for its content."""

        calls = 0

        def insert_rows(self, table, rows, row_ids):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("BigQuery is down")
            raise RejectedRows("refused", {0: ["no such field: secret"]})

    mirror = RunStateMirror(store=Down(), spool_dir=tmp_path / "spool")
    row = {"event_key": "e1", "event_time": datetime.now(UTC), "dag_id": "d", "run_id": "r", "state": "FAILED"}
    assert mirror.record(row) is False
    spooled = list((tmp_path / "spool").glob("*.json"))
    assert len(spooled) == 1 and (mode(tmp_path / "spool"), mode(spooled[0])) == (0o700, 0o600)
    assert mirror.drain() == 1  # set aside under rejected/, with BigQuery's error message
    rejected = tmp_path / "spool" / "rejected"
    assert [p.name for p in rejected.glob("*.json")] == ["e1.json"]
    assert (mode(rejected), mode(rejected / "e1.json")) == (0o700, 0o600)


@pytest.fixture
def stranger() -> Iterator[tuple[int, subprocess.Popen]]:
    """Another process listening on a free loopback port (as a user's own server would)."""
    port = free_port()
    code = (
        "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); print('listening', flush=True); time.sleep(300)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "listening\n"
    try:
        yield port, proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("which", ["airflow_port", "emulator_port", "emulator_grpc_port"])
def test_stack_up_fails_naming_a_port_another_process_took_before_starting_anything(tmp_path, stranger, which):
    port, proc = stranger
    settings = settings_on(tmp_path / "state", **{which: port})
    began = time.monotonic()
    with pytest.raises(PortError, match=rf"port {port} \(for the .*\) is already taken by pid {proc.pid}"):
        local_stack.up(settings)
    assert time.monotonic() - began < 5
    assert not (settings.state_dir / "run").exists(), "nothing was started"


def test_stack_up_on_the_command_line_names_the_taken_port(tmp_path, stranger):
    port, _ = stranger
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("CP_", "AIRFLOW", "BIGQUERY"))},
        "PYTHONPATH": str(REPO_ROOT / "plugins"),
        "CP_STATE_DIR": str(tmp_path / "state"),
        "CP_AIRFLOW_PORT": str(port),
        "CP_EMULATOR_PORT": str(free_port()),
        "CP_EMULATOR_GRPC_PORT": str(free_port()),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "customer_pipelines", "stack", "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 1
    assert f"error: port {port} (for the Airflow API server) is already taken" in proc.stderr


def test_a_free_port_passes_and_a_port_is_trusted_only_from_the_process_listening_on_it(tmp_path, stranger):
    port, proc = stranger
    ensure_port_free(free_port(), "Airflow API server")  # the twin of the refusals above
    verify_listener(port, proc.pid, "Airflow API server")  # the listener itself
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        with pytest.raises(PortError, match=rf"port {port} is answered by a process the stack did not start"):
            verify_listener(port, sleeper.pid, "Airflow API server")  # the pid file's process is not the listener
    finally:
        sleeper.kill()
        sleeper.wait()
    silent = free_port()
    with pytest.raises(PortError, match=rf"port {silent}: nothing listens there"):
        verify_listener(silent, proc.pid, "Airflow API server")


def test_listeners_tell_loopback_from_every_interface():
    with socket.socket() as loop, socket.socket() as every, socket.socket(socket.AF_INET6) as loop6:
        for sock, address in ((loop, "127.0.0.1"), (every, "0.0.0.0"), (loop6, "::1")):
            sock.bind((address, 0))
            sock.listen()
        found = {s.port: s for s in listeners() if s.port in {x.getsockname()[1] for x in (loop, every, loop6)}}
        assert found[loop.getsockname()[1]].is_loopback
        assert not found[every.getsockname()[1]].is_loopback
        assert found[loop6.getsockname()[1]].is_loopback
