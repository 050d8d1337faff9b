"""The production-like stack (docker-compose.yaml), its real-BigQuery override and their images.

No Docker engine is needed: a compose client renders the files (``docker-compose config``), which
validates them and resolves anchors, overrides and variables exactly as ``up`` would; the tests read
that rendering. The airflow-init script is run for real, with stub ``airflow``/``python``/``curl``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "docker-compose.yaml"
BIGQUERY = REPO / "docker-compose.bigquery.yaml"
AIRFLOW_DOCKERFILE = REPO / "docker" / "airflow.Dockerfile"
EMULATOR_DOCKERFILE = REPO / "docker" / "bqemulator.Dockerfile"

REQUIRED_SERVICES = {
    "postgres",
    "redis",
    "bigquery-emulator",
    "airflow-init",
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "customer-pipelines-syncer",
}
ONE_SHOT = {"airflow-init"}
SNAPSHOT_READERS_AND_WRITERS = {"airflow-init", "airflow-dag-processor", "airflow-worker", "customer-pipelines-syncer"}
STATE_DIR = "/opt/airflow/state"
STORE_DIR = "/opt/airflow/snapshot-store"
REMOTE_SERVICES = {"airflow-dag-processor", "airflow-worker"}
"""Services that may run on other hosts: no shared state, the snapshot from the store."""
KEY_IN_CONTAINER = "/opt/airflow/secrets/gcp.json"
EMULATOR_COMMAND = [
    *("bqemulator", "start", "--persistent", "--data-dir", "/data"),
    *("--rest-host", "0.0.0.0", "--rest-port", "9050", "--grpc-host", "0.0.0.0", "--grpc-port", "9060"),
    *("--project", "demo-project"),
]
SYNCER_COMMAND = ["python", "-m", "customer_pipelines", "sync", "--loop", "--interval", "60"]
INIT_STEPS = [
    "airflow db migrate",
    "airflow users create --role Admin --username admin --password test-admin-password-0123456789"
    " --firstname Platform --lastname Admin --email admin@localhost",
    "python -m customer_pipelines schema apply",
    "python -m customer_pipelines seed demo",
    "python -m customer_pipelines sync",
]


# --- rendering the files with the compose client -------------------------------------------------


def _compose_binary() -> str:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail(
            "docker-compose is not installed, so docker-compose.yaml cannot be validated: "
            "`make test` installs it (scripts/install.sh: apt-get install -y docker-compose)",
            pytrace=False,
        )
    return binary


def _clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment minus every variable the compose files read (and COMPOSE_*), so
    the rendering shows the files' own defaults whatever the test session exports."""
    referenced = set()
    for path in (BASE, BIGQUERY):
        referenced |= set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
    env = {k: v for k, v in os.environ.items() if k not in referenced and not k.startswith("COMPOSE_")}
    env.update(extra)
    env["COMPOSE_INTERACTIVE_NO_CLI"] = "1"
    return env


def _compose_command(files: list[Path], args: list[str], env_file: Path) -> list[str]:
    command = [_compose_binary(), "--env-file", str(env_file), "--project-directory", str(REPO)]
    for path in files:
        command += ["-f", str(path)]
    return command + args


@pytest.fixture(scope="module")
def empty_env_file(tmp_path_factory) -> Path:
    """Stands in for a developer's .env, which must not change what the tests see."""
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="module")
def key_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gcp") / "service-account.json"
    path.write_text('{"type": "service_account"}')
    return path


SECRETS = {
    "AIRFLOW_JWT_SECRET": "test-jwt-secret-0123456789abcdef0123456789abcdef",
    "AIRFLOW_FERNET_KEY": "dGVzdC1mZXJuZXQta2V5LTAxMjM0NTY3ODlhYmNkZWY=",
    "POSTGRES_PASSWORD": "test-postgres-password-0123456789",
    "FLOWER_BASIC_AUTH": "flower:test-flower-password-0123456789",
    "AIRFLOW_ADMIN_PASSWORD": "test-admin-password-0123456789",
}
"""What scripts/compose_env.py would write into .env: the stack has no default for any of them."""
KNOWN_DEFAULT_SECRETS = {"", "change-me", "changeme", "airflow", "secret", "password", "admin", "postgres"}


@pytest.fixture(scope="module")
def compose(empty_env_file, key_file) -> dict[str, subprocess.CompletedProcess]:
    """Every compose invocation the tests need, run side by side (each takes about a second)."""
    project = {**SECRETS, "CP_BQ_PROJECT": "acme-prod-analytics"}
    credentials = {**project, "GOOGLE_APPLICATION_CREDENTIALS_HOST_PATH": str(key_file)}
    runs = {
        "base -q": ([BASE], ["config", "-q"], SECRETS),
        "bigquery -q": ([BASE, BIGQUERY], ["config", "-q"], credentials),
        "bigquery without key -q": ([BASE, BIGQUERY], ["config", "-q"], project),
        "base": ([BASE], ["config"], SECRETS),
        "bigquery": ([BASE, BIGQUERY], ["config"], {**credentials, "CP_SYNC_INTERVAL_SECONDS": "17"}),
        **{
            f"base without {name} -q": ([BASE], ["config", "-q"], {k: v for k, v in SECRETS.items() if k != name})
            for name in SECRETS
        },
    }
    started = {
        name: subprocess.Popen(
            _compose_command(files, args, empty_env_file),
            cwd=REPO,
            env=_clean_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (files, args, env) in runs.items()
    }
    results = {}
    for name, process in started.items():
        stdout, stderr = process.communicate(timeout=120)
        results[name] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results


def _rendered(result: subprocess.CompletedProcess) -> dict:
    assert result.returncode == 0, f"docker-compose config failed:\n{result.stderr}"
    return yaml.safe_load(result.stdout)["services"]


@pytest.fixture(scope="module")
def stack(compose) -> dict:
    return _rendered(compose["base"])


@pytest.fixture(scope="module")
def bigquery_stack(compose) -> dict:
    return _rendered(compose["bigquery"])


def _airflow_services(services: dict) -> dict:
    """Every service that runs the project's Airflow image."""
    return {
        name: svc
        for name, svc in services.items()
        if svc.get("build", {}).get("dockerfile", "").endswith("airflow.Dockerfile")
    }


def _volumes(service: dict) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) for short- or long-syntax volume entries."""
    mounts = {}
    for entry in service.get("volumes", []):
        if isinstance(entry, dict):
            mode = "ro" if entry.get("read_only") else "rw"
            mounts[entry["target"]] = (str(entry.get("source", "")), mode)
        else:
            parts = entry.split(":")
            source, target = parts[0], parts[1]
            mounts[target] = (source, parts[2] if len(parts) > 2 else "rw")
    return mounts


def _command_text(service: dict) -> str:
    command = service.get("command", "")
    return " ".join(command) if isinstance(command, list) else command


# --- the files are valid ------------------------------------------------------------------------


def test_base_stack_is_accepted_by_the_compose_client(compose):
    result = compose["base -q"]
    assert result.returncode == 0, result.stderr


def test_bigquery_override_is_accepted_by_the_compose_client_when_project_and_key_are_given(compose):
    result = compose["bigquery -q"]
    assert result.returncode == 0, result.stderr


def test_bigquery_override_refuses_to_start_without_a_credentials_path(compose):
    result = compose["bigquery without key -q"]
    assert result.returncode != 0
    assert "GOOGLE_APPLICATION_CREDENTIALS_HOST_PATH" in result.stderr


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_the_stack_refuses_to_start_without_each_secret_naming_it_and_the_script_that_makes_it(compose, secret):
    assert compose["base -q"].returncode == 0  # the twin: with every secret set it is accepted
    result = compose[f"base without {secret} -q"]
    assert result.returncode != 0
    assert secret in result.stderr and "scripts/compose_env.py" in result.stderr, result.stderr


def test_no_secret_has_a_default_in_the_compose_files():
    for path in (BASE, BIGQUERY):
        for name in SECRETS:
            # $${NAME} is compose's escape: the container's shell reads it, not compose
            uses = re.findall(rf"(?<!\$)\$\{{{name}(:?[-?][^}}]*)?\}}", path.read_text())
            assert all(use.startswith(":?") for use in uses), f"{path.name}: ${{{name}{uses}}} must be required"


def test_the_rendered_stack_has_no_known_default_secret_no_empty_key_and_no_port_open_to_every_interface(stack):
    for name, service in stack.items():
        env = service.get("environment") or {}
        for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "POSTGRES_PASSWORD"):
            if key in env:
                assert str(env[key]).lower() not in KNOWN_DEFAULT_SECRETS, f"{name}: {key}={env[key]!r}"
        for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND", "CP_QUOTA_DB_URL"):
            if key in env:
                assert ":airflow@" not in env[key], f"{name}: {key} uses the default password"
        for port in service.get("ports") or []:
            host = port.get("host_ip") if isinstance(port, dict) else port.split(":")[0]
            assert host == "127.0.0.1", f"{name} publishes {port} beyond this machine"
    assert stack["flower"]["environment"]["AIRFLOW__CELERY__FLOWER_BASIC_AUTH"] == SECRETS["FLOWER_BASIC_AUTH"]
    assert stack["airflow-init"]["environment"]["AIRFLOW_ADMIN_PASSWORD"] == SECRETS["AIRFLOW_ADMIN_PASSWORD"]
    assert stack["flower"]["profiles"] == ["flower"]  # off unless asked for


# --- the shape of the stack ---------------------------------------------------------------------


def test_every_airflow_service_runs_the_fab_auth_manager_never_the_simple_one(stack, bigquery_stack):
    from customer_pipelines.local.airflow import FAB_AUTH_MANAGER

    for rendering in (stack, bigquery_stack):
        for name, service in _airflow_services(rendering).items():
            env = service["environment"]
            assert env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER, name
            assert not [k for k in env if "SIMPLE_AUTH_MANAGER" in k], f"{name}: {env}"


def test_stack_defines_every_required_service(stack):
    missing = REQUIRED_SERVICES - set(stack)
    assert not missing, f"services missing from docker-compose.yaml: {sorted(missing)}"


def test_every_long_running_service_has_a_healthcheck_and_restarts_always(stack):
    for name, service in stack.items():
        if name in ONE_SHOT:
            continue
        assert service.get("restart") == "always", f"{name}: restart policy is {service.get('restart')!r}"
        test = service.get("healthcheck", {}).get("test")
        assert test and not service["healthcheck"].get("disable"), f"{name} has no health check"


def test_airflow_init_is_one_shot_and_every_other_airflow_service_waits_for_it(stack):
    assert stack["airflow-init"].get("restart", "no") == "no"
    for name, service in _airflow_services(stack).items():
        depends = service.get("depends_on", {})
        assert depends.get("postgres", {}).get("condition") == "service_healthy", name
        if name != "airflow-init":
            assert depends.get("airflow-init", {}).get("condition") == "service_completed_successfully", name
    assert stack["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"


def test_airflow_uses_celery_on_redis_and_postgres_metadata(stack):
    for name, service in _airflow_services(stack).items():
        env = service["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://:@redis:6379/0", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
        assert env["CP_QUOTA_DB_URL"].startswith("postgresql://"), name


def test_workers_are_scalable_without_container_name_or_host_ports(stack):
    worker = stack["airflow-worker"]
    assert "container_name" not in worker
    assert not worker.get("ports"), f"host ports stop `--scale airflow-worker=N`: {worker.get('ports')}"
    assert _command_text(worker) == "celery worker"


def test_the_services_run_the_commands_the_local_celery_stack_starts_as_processes(stack, tmp_path):
    """tests/e2e/test_celery_stack.py starts this topology without Docker: same components, same
    commands, same executor, broker and result backend."""
    from customer_pipelines.local import stack as local_stack
    from customer_pipelines.local.airflow import airflow_env, component_command, components_of
    from customer_pipelines.settings import Settings

    services = {name: svc for name, svc in _airflow_services(stack).items() if not svc.get("profiles")}
    in_compose = {tuple(_command_text(svc).split()) for name, svc in services.items() if name not in ONE_SHOT}
    settings = Settings(executor="CeleryExecutor", celery_workers=2, redis_url="redis://:x@127.0.0.1:1/0")
    started = {component_command(c) for c in components_of(settings)}
    syncer = ("python", "-m", "customer_pipelines", *local_stack.SYNCER_COMMAND)
    assert {c for c in in_compose if c[0] != "python"} == started
    assert {c[: len(syncer)] for c in in_compose if c[0] == "python"} == {syncer}

    local_env = airflow_env(settings.model_copy(update={"state_dir": tmp_path / "state"}), "postgresql://x/y")
    compose_env = services["airflow-scheduler"]["environment"]
    assert local_env["AIRFLOW__CORE__EXECUTOR"] == compose_env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for key in ("AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND"):
        assert local_env[key].split("://")[0] == compose_env[key].split("://")[0], key


def test_workers_and_the_dag_processor_share_no_state_and_fetch_the_snapshot_from_the_store(stack, tmp_path):
    """The snapshot's writers (airflow-init, syncer, API server) share the control plane's state
    volume and its lock; the dag-processor and the workers mount no shared state: they fetch the
    snapshot's generations from CP_SNAPSHOT_STORE_URL, through the versioned DAG bundle the local
    Celery stack runs too (tests/e2e/test_celery_stack.py)."""
    from customer_pipelines.local.airflow import snapshot_store_env
    from customer_pipelines.settings import Settings

    airflow = _airflow_services(stack)
    assert set(airflow) >= SNAPSHOT_READERS_AND_WRITERS
    local = snapshot_store_env(Settings(state_dir=tmp_path, snapshot_store_url="file:///x"))
    local_bundles = json.loads(local["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    for name, service in airflow.items():
        env = service["environment"]
        assert env["CP_STATE_DIR"] == STATE_DIR, name
        store = env["CP_SNAPSHOT_STORE_URL"]
        assert store == f"file://{STORE_DIR}", name
        bundles = json.loads(env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
        assert [(b["name"], b["classpath"]) for b in bundles] == [(b["name"], b["classpath"]) for b in local_bundles], (
            name
        )
        volumes = _volumes(service)
        assert volumes.get(STORE_DIR) == ("snapshot-store", "rw"), f"{name}: the store's volume at {STORE_DIR}"
        source, mode = volumes.get(STATE_DIR, ("", ""))
        if name in REMOTE_SERVICES:
            assert STATE_DIR not in volumes, f"{name} must not share the control plane's state"
        else:
            assert (source, mode) == ("cp-state", "rw"), f"{name} does not mount the cp-state volume at {STATE_DIR}"
    assert {"cp-state", "snapshot-store"} <= set(yaml.safe_load(BASE.read_text())["volumes"])


def test_airflow_talks_to_the_emulator_by_default_and_the_emulator_starts_by_default(stack):
    for name, service in _airflow_services(stack).items():
        assert service["environment"]["BIGQUERY_EMULATOR_HOST"] == "bigquery-emulator:9050", name
        assert service["environment"]["CP_BQ_PROJECT"] == "demo-project", name
    emulator = stack["bigquery-emulator"]
    assert not emulator.get("profiles"), "the emulator must start with a plain `up`"
    assert _command_text(emulator).split() == EMULATOR_COMMAND
    assert emulator["environment"]["BQEMU_ENABLE_FORMAT_EXTENSIONS"] == "false"
    assert emulator["environment"]["HOME"] == "/home/bq"
    assert "/bigquery/v2/projects/demo-project/datasets" in " ".join(emulator["healthcheck"]["test"])


def test_no_service_depends_on_the_emulator_so_an_override_can_switch_it_off(stack):
    # docker-compose 1.29 can neither drop a dependency in an override (`!reset`) nor mark it
    # optional (`required: false`); `up` refuses a dependency on a service outside the active profiles.
    for name, service in stack.items():
        assert "bigquery-emulator" not in service.get("depends_on", {}), name


def test_syncer_loops_every_cp_sync_interval_seconds(stack, bigquery_stack):
    assert _command_text(stack["customer-pipelines-syncer"]).split() == SYNCER_COMMAND
    assert _command_text(bigquery_stack["customer-pipelines-syncer"]).split()[-2:] == ["--interval", "17"]


# --- the real-BigQuery override -----------------------------------------------------------------


def test_bigquery_override_switches_the_emulator_off(bigquery_stack):
    assert bigquery_stack["bigquery-emulator"].get("profiles"), "the emulator would still start"
    for name, service in bigquery_stack.items():
        assert "bigquery-emulator" not in service.get("depends_on", {}), name
    for name, service in _airflow_services(bigquery_stack).items():
        assert service["environment"]["BIGQUERY_EMULATOR_HOST"] == "", name
        assert service["environment"]["CP_BQ_PROJECT"] == "acme-prod-analytics", name


def test_bigquery_override_mounts_the_key_read_only_where_google_credentials_point(bigquery_stack, key_file):
    airflow = _airflow_services(bigquery_stack)
    assert set(airflow) >= REQUIRED_SERVICES - {"postgres", "redis", "bigquery-emulator"}
    for name, service in airflow.items():
        assert service["environment"]["GOOGLE_APPLICATION_CREDENTIALS"] == KEY_IN_CONTAINER, name
        assert _volumes(service).get(KEY_IN_CONTAINER) == (str(key_file), "ro"), name
        assert _volumes(service).get(STORE_DIR, ("",))[0] == "snapshot-store", f"{name} lost the store's volume"
        if name not in REMOTE_SERVICES:
            assert _volumes(service).get(STATE_DIR, ("",))[0] == "cp-state", f"{name} lost the state volume"


def test_bigquery_override_does_not_seed_demo_customers_unless_asked(stack, bigquery_stack):
    assert stack["airflow-init"]["environment"]["CP_SEED_DEMO"] == "true"
    assert bigquery_stack["airflow-init"]["environment"]["CP_SEED_DEMO"] == "false"


# --- airflow-init, run for real with stub commands ----------------------------------------------


def _init_script(stack: dict) -> str:
    command = stack["airflow-init"]["command"]
    assert command[:2] == ["bash", "-c"], command
    return command[2].replace("$$", "$")  # compose's own escape, undone as compose does for `up`


def _stub(bin_dir: Path, name: str, body: str, record: bool = True) -> None:
    path = bin_dir / name
    log = f'echo "{name} $*" >> "$CALLS"\n' if record else ""
    path.write_text(f"#!/bin/bash\n{log}{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _run_init(stack: dict, tmp_path: Path, *, fail_on: str = "", curl_failures: int = 0, **env: str):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    calls.touch()
    fail = f'[[ "$*" == *"{fail_on}"* ]] && exit 3; exit 0' if fail_on else "exit 0"
    _stub(bin_dir, "airflow", fail)
    _stub(bin_dir, "python", fail)
    _stub(bin_dir, "sleep", "exit 0", record=False)
    _stub(bin_dir, "curl", f'[ "$(grep -c ^curl "$CALLS")" -gt {curl_failures} ]')
    init_env = stack["airflow-init"]["environment"]
    run_env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "CALLS": str(calls),
        "CP_BQ_PROJECT": "demo-project",
        "BIGQUERY_EMULATOR_HOST": "",
        **{k: str(init_env[k]) for k in ("AIRFLOW_ADMIN_USERNAME", "AIRFLOW_ADMIN_PASSWORD")},
        **env,
    }
    result = subprocess.run(
        ["bash", "-c", _init_script(stack)], env=run_env, capture_output=True, text=True, timeout=30
    )
    return result, calls.read_text().splitlines()


def test_airflow_init_migrates_applies_schema_seeds_and_syncs_in_order(stack, tmp_path):
    env = stack["airflow-init"]["environment"]
    result, calls = _run_init(stack, tmp_path, CP_SEED_DEMO=str(env["CP_SEED_DEMO"]))
    assert result.returncode == 0, result.stderr
    assert calls == INIT_STEPS


def test_airflow_init_skips_the_demo_seed_when_cp_seed_demo_is_false(stack, tmp_path):
    result, calls = _run_init(stack, tmp_path, CP_SEED_DEMO="false")
    assert result.returncode == 0, result.stderr
    assert calls == [step for step in INIT_STEPS if "seed" not in step]


def test_airflow_init_stops_at_the_first_failing_step(stack, tmp_path):
    result, calls = _run_init(stack, tmp_path, fail_on="schema apply", CP_SEED_DEMO="true")
    assert result.returncode != 0
    assert calls == INIT_STEPS[: INIT_STEPS.index("python -m customer_pipelines schema apply") + 1]


def test_airflow_init_waits_for_the_emulator_before_touching_bigquery(stack, tmp_path):
    result, calls = _run_init(
        stack, tmp_path, curl_failures=2, BIGQUERY_EMULATOR_HOST="bigquery-emulator:9050", CP_SEED_DEMO="false"
    )
    assert result.returncode == 0, result.stderr
    curls = [c for c in calls if c.startswith("curl")]
    assert len(curls) == 3
    assert "http://bigquery-emulator:9050/bigquery/v2/projects/demo-project/datasets" in curls[0]
    assert calls[: len(curls)] == curls, "a step ran before the emulator answered"
    assert calls[len(curls) :] == [step for step in INIT_STEPS if "seed" not in step]


def test_airflow_init_gives_up_when_the_emulator_never_answers(stack, tmp_path):
    result, calls = _run_init(
        stack,
        tmp_path,
        curl_failures=1000,
        BIGQUERY_EMULATOR_HOST="bigquery-emulator:9050",
        CP_EMULATOR_WAIT_TRIES="4",
    )
    assert result.returncode != 0
    assert len(calls) == 4 and all(call.startswith("curl ") for call in calls), calls


# --- the images ---------------------------------------------------------------------------------


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==([^\s#;]+)", line)
        if match:
            pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_airflow_image_matches_the_pinned_airflow_and_installs_the_constraints():
    dockerfile = AIRFLOW_DOCKERFILE.read_text()
    base = re.search(r"^FROM apache/airflow:(\S+)-python3\.11\s*$", dockerfile, re.M)
    assert base, "the Airflow image must build FROM apache/airflow:<version>-python3.11"
    assert base.group(1) == _pins(REPO / "requirements.txt")["apache-airflow"]
    assert "pip install --no-cache-dir -r /requirements.txt -c /constraints.txt" in dockerfile
    assert re.search(r"^COPY requirements\.txt constraints\.txt /\s*$", dockerfile, re.M)


def test_the_airflow_image_installs_no_test_or_lint_tool_and_the_dev_install_adds_them():
    dev_tools = {
        "pytest",
        "pytest-timeout",
        "ruff",
        "schemathesis",
        "apache-airflow-client",
        "markdown-it-py",
        "playwright",
    }
    runtime = (REPO / "requirements.txt").read_text().splitlines()
    names = {re.split(r"[=<>\[; ]", line)[0].lower() for line in runtime if line[:1].isalpha()}
    assert names and not names & dev_tools, names & dev_tools
    dev = (REPO / "requirements-dev.txt").read_text().splitlines()
    assert "-r requirements.txt" in dev
    assert {re.split(r"[=<>\[; ]", line)[0].lower() for line in dev if line[:1].isalpha()} == dev_tools


def test_emulator_image_bakes_the_spatial_extension_of_the_pinned_duckdb():
    dockerfile = EMULATOR_DOCKERFILE.read_text()
    pins = _pins(REPO / "constraints-bqemulator.txt")
    for package in ("bqemulator", "duckdb", "duckdb-extension-spatial"):
        assert f"{package}=={pins[package]}" in dockerfile, f"{package} is not pinned as in constraints"
    duckdb = pins["duckdb"]
    target = f"/home/bq/.duckdb/extensions/v{duckdb}/linux_amd64/spatial.duckdb_extension"
    assert target in dockerfile, f"the extension is not copied to {target}"
    assert f"extensions/v{duckdb}/spatial.duckdb_extension" in dockerfile
    assert re.search(r"^USER bq\s*$", dockerfile, re.M) and "HOME=/home/bq" in dockerfile
