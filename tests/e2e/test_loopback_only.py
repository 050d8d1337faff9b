"""The stack listens on loopback only (issue #19): every listening TCP socket of its processes (the
emulators, Airflow's API server, scheduler with its health check, dag-processor, triggerer, the
LocalExecutor's workers, the syncer; PostgreSQL has only a Unix socket), read from /proc."""

from __future__ import annotations

import pytest

from customer_pipelines.local.processes import listeners, socket_owners
from tests_support import stack_pids

pytestmark = pytest.mark.e2e


def test_every_listening_socket_of_the_stack_is_on_loopback(stack):
    info, client = stack
    client.dags()  # the API server answered (its workers are up)
    pids = stack_pids(info.settings.state_dir)
    every = listeners()
    owners = socket_owners({s.inode for s in every})
    of_the_stack = [s for s in every if owners[s.inode] & pids]

    ports = {s.port for s in of_the_stack}
    settings = info.settings
    expected = {
        settings.airflow_port,
        settings.emulator_port,
        settings.emulator_grpc_port,
        settings.data_emulator_port,
        settings.data_emulator_grpc_port,
        8974,  # the scheduler's health check (Airflow's default port)
    }
    assert expected <= ports, f"sockets of the stack not found: {expected - ports}"
    outside = sorted(
        f"{s.address}:{s.port} (pids {sorted(owners[s.inode] & pids)})" for s in of_the_stack if not s.is_loopback
    )
    assert outside == [], f"the stack listens beyond loopback: {outside}"
