from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests_support import ZOMBIE_AFTER_SECONDS, free_port, running_stack, service_state_dir


@pytest.fixture(scope="session")
def stack() -> Iterator:
    """The embedded system as `make demo` starts it (emulator, embedded PostgreSQL, Airflow's
    scheduler, dag-processor, triggerer and API server, the syncer), on free ports, with a second
    emulator for the data plane."""
    from customer_pipelines.settings import Settings

    state = service_state_dir("cp-test-stack-")
    settings = Settings(
        state_dir=state,
        emulator_port=free_port(),
        emulator_grpc_port=free_port(),
        # The data plane on an emulator of its own, in a project of its own: the split production has.
        data_emulator_port=free_port(),
        data_emulator_grpc_port=free_port(),
        data_bq_project="e2e-data-project",
        airflow_port=free_port(),
        bq_project="e2e-project",
        # the tests sync when they change BigQuery; a periodic round must not race them
        sync_interval_seconds=3600,
    )
    # A dead worker is declared a zombie after 30 s instead of Airflow's 5 minutes (the zombie test).
    heartbeat = {
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(ZOMBIE_AFTER_SECONDS),
        # The API tests send hundreds of requests a minute as one admin; the limit itself is tested
        # on its own (tests/unit/api/test_app_wiring.py).
        "CP_API_RATE_LIMIT_PER_MINUTE": "100000",
    }
    with running_stack(settings, heartbeat) as running:
        yield running
