"""The production topology without Docker: docker-compose.yaml's services as processes on 127.0.0.1 —
the emulator, PostgreSQL (the embedded one) as Airflow's metadata database, Redis as Celery's broker
(run by the stack), Airflow's API server (with the FAB auth manager, as in production), scheduler,
DAG processor and triggerer, and two Celery workers. The demo fleet and a small synthetic fleet run
on the workers and are mirrored; a worker killed in the middle of a run loses that try only: the
retry runs on the other worker and is mirrored. The workers and the DAG processor share no disk with
the syncer: each has a state directory of its own and fetches the snapshot from the store (a
``file://`` store here, object storage in production), and a task runs on the generation its DAG was
parsed from."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.local.processes import pid_alive, read_pid
from customer_pipelines.seed import demo_dataset
from tests_support import (
    ZOMBIE_AFTER_SECONDS,
    add_customer,
    config_body,
    eventually,
    free_port,
    held_quota_gate,
    mirrored_events,
    running_stack,
    service_state_dir,
    stack_pids,
    task_process,
)

pytestmark = pytest.mark.e2e

WORKERS = ("celery-worker-1", "celery-worker-2")


@pytest.fixture(scope="module")
def celery_stack() -> Iterator:
    from customer_pipelines.settings import Settings

    state = service_state_dir("cp-test-celery-")
    object_store = service_state_dir("cp-test-snapshot-store-")
    settings = Settings(
        snapshot_store_url=f"file://{object_store}",
        state_dir=state,
        executor="CeleryExecutor",
        celery_workers=2,
        celery_worker_concurrency=4,
        redis_port=free_port(),
        auth_manager="fab",
        emulator_port=free_port(),
        emulator_grpc_port=free_port(),
        airflow_port=free_port(),
        bq_project="e2e-celery",
        sync_interval_seconds=3600,
    )
    with running_stack(
        settings, {"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(ZOMBIE_AFTER_SECONDS)}
    ) as up:
        yield up
    shutil.rmtree(object_store, ignore_errors=True)


def test_fab_is_the_auth_manager_and_its_roles_govern_the_rest_api(celery_stack):
    from customer_pipelines.api.app import URL_PREFIX
    from customer_pipelines.local.airflow import FAB_AUTH_MANAGER, api_url, create_fab_user
    from customer_pipelines.local.airflow_api import AirflowClient

    info, admin = celery_stack
    assert info.env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB_AUTH_MANAGER
    assert not (info.settings.state_dir / "airflow" / "simple_auth_manager_passwords.json.generated").exists()
    create_fab_user(info.env, "ops_viewer", "viewer-password-0123", role="Viewer")
    viewer = AirflowClient(api_url(info.settings), "ops_viewer", "viewer-password-0123")
    base = api_url(info.settings) + URL_PREFIX
    configs = f"{base}/customers/cust_acme_001/configs"

    def call(method: str, url: str, token: str | None, **kwargs) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.request(method, url, headers=headers, timeout=60, **kwargs).status_code

    assert call("GET", configs, None) == 401
    assert call("GET", configs, viewer.token()) == 200  # FAB's Viewer reads DAGs
    body = {"reason": "fab role check"}
    assert call("POST", f"{configs}/acme_gcp_cost_daily/pause", viewer.token(), json=body) == 403
    assert call("POST", f"{configs}/acme_gcp_cost_daily/pause", admin.token(), json=body) == 200
    assert call("POST", f"{configs}/acme_gcp_cost_daily/enable", admin.token()) == 200
    created = call("POST", configs, admin.token(), json=config_body("fab_admin_cfg"))
    assert created == 201  # FAB grants no "create" on DAGs: a new config is a DAG edit
    assert call("POST", configs, viewer.token(), json=config_body("fab_viewer_cfg")) == 403


def _worker_pid(info, worker: str) -> int | None:
    return read_pid(info.settings.state_dir / "run" / f"airflow-{worker}.pid")


def _received(info, worker: str) -> int:
    """Airflow workloads the worker's Celery node received (its log's 'Task ... received' lines)."""
    log = (info.settings.state_dir / "run" / f"airflow-{worker}.log").read_text(errors="replace")
    return len(re.findall(r"execute_workload\[[0-9a-f-]+\] received", log))


def test_the_stack_runs_celery_with_redis_and_two_workers_started_as_processes(celery_stack):
    info, _ = celery_stack
    assert info.env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert info.env["AIRFLOW__CELERY__BROKER_URL"].endswith(f"@127.0.0.1:{info.settings.redis_port}/0")
    assert read_pid(info.settings.state_dir / "run" / "redis.pid") is not None
    assert all(_worker_pid(info, worker) is not None for worker in WORKERS)


def test_every_listening_socket_of_the_celery_stack_is_on_loopback(celery_stack):
    """Redis on 127.0.0.1, the workers without their log servers (which bind every interface)."""
    from customer_pipelines.local.processes import listeners, socket_owners

    info, client = celery_stack
    client.dags()
    pids = stack_pids(info.settings.state_dir)
    every = listeners()
    owners = socket_owners({s.inode for s in every})
    of_the_stack = [s for s in every if owners[s.inode] & pids]
    expected = {info.settings.airflow_port, info.settings.emulator_port, info.settings.redis_port}
    assert expected <= {s.port for s in of_the_stack}
    assert [f"{s.address}:{s.port}" for s in of_the_stack if not s.is_loopback] == []


def test_the_demo_fleet_and_a_synthetic_fleet_run_on_both_workers_and_every_run_ismirrored_events(celery_stack):
    info, client = celery_stack
    demo = [f"{c['customer_id']}.{c['config_id']}" for c in demo_dataset().configs if c["is_active"]]
    synthetic = [
        dag_id
        for n in (1, 2)
        for dag_id in add_customer(info, f"cust_celery_{n:03d}", "SCALE", [(f"celery_{n}_{i}", 5) for i in range(6)])
    ]
    dag_ids = demo + synthetic
    client.wait_for_dags(dag_ids, timeout=240)
    for dag_id in synthetic:
        client.set_paused(dag_id, False)  # a new customer's DAGs wait for the syncer's unpause otherwise
    runs = {dag_id: client.trigger(dag_id)["dag_run_id"] for dag_id in dag_ids}
    states = {dag_id: client.wait_for_run(dag_id, run_id, timeout=600)["state"] for dag_id, run_id in runs.items()}
    assert set(states.values()) == {"success"}, states

    store = BigQueryStore(info.settings)
    unmirrored = {
        dag_id: [e["state"] for e in mirrored_events(store, dag_id, run_id)]
        for dag_id, run_id in runs.items()
        if "COMPLETED" not in [e["state"] for e in mirrored_events(store, dag_id, run_id)]
    }
    assert not unmirrored, unmirrored
    received = {worker: _received(info, worker) for worker in WORKERS}
    assert all(received.values()), f"each worker takes a share of {len(runs)} runs: {received}"
    assert sum(received.values()) >= len(runs)


def _cached_generations(info, worker: str) -> set[int]:
    cache = info.settings.state_dir / "hosts" / worker / "snapshot-cache"
    return {int(p.stem.split("-")[1]) for p in cache.glob("configs-*.sqlite")}


def test_workers_share_no_disk_with_the_syncer_and_run_each_task_on_its_dags_generation(celery_stack):
    from customer_pipelines.snapshot import Snapshot
    from customer_pipelines.snapshot_store import SnapshotStore

    info, client = celery_stack
    settings = info.settings
    run_dir = settings.state_dir / "run"
    store = SnapshotStore(str(settings.snapshot_store_url))
    # The DAG processor and each worker run with a state directory of their own (their environment:
    # tests/unit/test_local_stack.py; Airflow's process titles overwrite /proc/<pid>/environ). The DAG
    # processor's snapshot there is a copy it fetched from the store, not the syncer's file.
    hosts = {component: settings.state_dir / "hosts" / component for component in ("dag-processor", *WORKERS)}
    assert all(path.is_dir() for path in hosts.values()), hosts
    with (
        Snapshot(settings.snapshot_file) as syncer,
        Snapshot(hosts["dag-processor"] / "snapshot" / "configs.sqlite") as dag_processor_copy,
    ):
        assert eventually(lambda: store.current() == syncer.generation, 30)
        assert os.stat(dag_processor_copy.path).st_ino != os.stat(syncer.path).st_ino
        assert dag_processor_copy.generation <= syncer.generation

    [pinned] = add_customer(info, "cust_celery_gen_1", "SCALE", [("gen_pinned", 5)])
    client.wait_for_dags([pinned], timeout=240)
    client.set_paused(pinned, False)
    parsed_from = eventually(lambda: client.dag_details(pinned)["bundle_version"], 60)
    assert parsed_from is not None and int(parsed_from) <= store.current()

    # The DAG processor stops (no parse publishes anything newer) while the syncer publishes a
    # newer generation: the pinned DAG's runs still run on the generation it was parsed from.
    dag_processor = read_pid(run_dir / "airflow-dag-processor.pid")
    os.kill(dag_processor, signal.SIGSTOP)
    try:
        [newer_dag] = add_customer(info, "cust_celery_gen_2", "SCALE", [("gen_newer", 5)])
        newest = store.current()
        assert newest > int(parsed_from), (newest, parsed_from)
        run_id = client.trigger(pinned)["dag_run_id"]
        assert client.wait_for_run(pinned, run_id, timeout=300)["state"] == "success"
        assert client.dag_run(pinned, run_id)["bundle_version"] == parsed_from
        cached = {worker: _cached_generations(info, worker) for worker in WORKERS}
        assert any(int(parsed_from) in generations for generations in cached.values()), cached
        assert not any(newest in generations for generations in cached.values()), cached
    finally:
        os.kill(dag_processor, signal.SIGCONT)

    # Parsed again, the new customer's DAG is recorded with the newest generation and runs on it.
    client.wait_for_dags([newer_dag], timeout=240)
    client.set_paused(newer_dag, False)
    assert eventually(lambda: client.dag_details(newer_dag)["bundle_version"] == str(newest), 60)
    run_id = client.trigger(newer_dag)["dag_run_id"]
    assert client.wait_for_run(newer_dag, run_id, timeout=300)["state"] == "success"
    assert client.dag_run(newer_dag, run_id)["bundle_version"] == str(newest)
    assert any(newest in _cached_generations(info, worker) for worker in WORKERS)
    for worker in WORKERS:  # a worker that ran tasks fetched their generations into its own directory
        assert bool(_cached_generations(info, worker)) == bool(_received(info, worker)), worker


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except OSError:
        return None


def _ancestors(pid: int) -> list[int]:
    chain = []
    while (parent := _parent(pid)) is not None and parent > 1:
        chain.append(pid := parent)
    return chain


def _tree(root: int) -> list[int]:
    """``root`` and every process below it (the task's supervisor starts it in a session of its own,
    so the worker's process group does not hold it)."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [root] + [pid for pid in pids if root in _ancestors(pid)]


def test_a_worker_killed_mid_run_loses_that_try_only_and_the_retry_runs_on_the_other_worker(celery_stack):
    info, client = celery_stack
    [dag_id] = add_customer(
        info,
        "cust_celery_kill",
        "SCALE",
        [("killed_mid_run", 5)],
        config_fields={"retry_config": {"max_attempts": 3, "base_delay_minutes": 0.1, "backoff_multiplier": 1}},
    )
    client.wait_for_dags([dag_id], timeout=240)
    client.set_paused(dag_id, False)
    with held_quota_gate(info, "cust_celery_kill"):  # the task stays inside execute until its worker dies
        run_id = client.trigger(dag_id)["dag_run_id"]
        assert eventually(lambda: client.task_instances(dag_id, run_id)[0]["state"] == "running", 180)
        ti_id = client.task_instances(dag_id, run_id)[0]["id"]
        task_pid = eventually(lambda: task_process(ti_id), 30)
        assert task_pid, f"no process titled 'airflow worker -- {ti_id}'"
        owners = [w for w in WORKERS if _worker_pid(info, w) in _ancestors(task_pid)]
        assert len(owners) == 1, f"the task's process {task_pid} belongs to one worker: {owners}"
        [killed] = owners
        [survivor] = [w for w in WORKERS if w != killed]
        killed_pid = _worker_pid(info, killed)
        received_before = _received(info, survivor)
        # The worker's machine is lost: its Celery pool, the task's supervisor and the task at once.
        doomed = _tree(killed_pid)
        assert task_pid in doomed
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for pid in doomed:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        assert eventually(lambda: not any(pid_alive(pid) for pid in doomed), 30)

    finished = client.wait_for_run(dag_id, run_id, timeout=ZOMBIE_AFTER_SECONDS + 300)
    assert finished["state"] == "success", finished
    [ti] = client.task_instances(dag_id, run_id)
    assert ti["try_number"] == 2, ti
    assert _received(info, survivor) > received_before, "the retry ran on the surviving worker"

    store = BigQueryStore(info.settings)

    def ended() -> list[tuple[int, str]]:
        events = mirrored_events(store, dag_id, run_id)
        return sorted((e["try_number"], e["state"]) for e in events if e["state"] in ("RETRYING", "COMPLETED"))

    assert eventually(lambda: ended() == [(1, "RETRYING"), (2, "COMPLETED")], 60), [
        (e["try_number"], e["state"], e["source"]) for e in mirrored_events(store, dag_id, run_id)
    ]
