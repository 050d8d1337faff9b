"""The OBSERVABILITY domain's template end to end: a config created through the REST API, run by
Airflow on the e2e stack, its report written on the data plane and its summary mirrored."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from customer_pipelines.bigquery.store import BigQueryStore
from tests_support import config_body, onboard

pytestmark = pytest.mark.e2e

MODELS = {"claude-sonnet-4": 1200, "claude-haiku-3-5": 800, "claude-rarely-used": 5}


def test_an_observability_config_reports_its_models_usage_and_is_mirrored_with_the_summary(stack, api):
    info, client = stack
    store = BigQueryStore(info.settings)
    onboard(api, "cust_obs_e2e")
    today = datetime.now(UTC).date()
    # A manual run reports the day before its logical date; every day around it has the same rows.
    store.for_plane("data").load_rows(
        "observability_usage",
        [
            {
                "customer_id": "cust_obs_e2e",
                "provider": "CLAUDE",
                "usage_date": today + timedelta(days=offset),
                "source": model,
                "requests": requests,
                "errors": requests // 100,
                "input_tokens": requests * 900,
                "output_tokens": requests * 300,
                "latency_ms_total": requests * 650.0,
                "probes": None,
                "probes_up": None,
            }
            for offset in (-2, -1, 0)
            for model, requests in MODELS.items()
        ],
    )
    created = api.admin(
        "POST",
        "/customers/cust_obs_e2e/configs",
        json=config_body(
            "obs_daily",
            provider="CLAUDE",
            domain="OBSERVABILITY",
            pipeline_template="observability_report",
            parameters={"min_requests": 10},
        ),
    )
    assert created.status_code == 201, created.text
    dag_id = "cust_obs_e2e.obs_daily"
    client.wait_for_dags([dag_id], timeout=240)

    triggered = api.admin("POST", "/customers/cust_obs_e2e/configs/obs_daily/runs")
    assert triggered.status_code == 201, triggered.text
    run_id = triggered.json()["run_id"]
    finished = client.wait_for_run(dag_id, run_id, timeout=240)

    assert finished["state"] == "success"
    events = store.query("queries/runs_of_dag_run.sql", {"dag_id": dag_id, "run_id": run_id})
    completed = events[-1]
    assert completed["state"] == "COMPLETED"
    # The two models with at least 10 requests, not the rarely used one (min_requests).
    assert completed["details"]["rows_written"] == 2
    assert completed["details"]["requests"] == MODELS["claude-sonnet-4"] + MODELS["claude-haiku-3-5"]
    assert completed["details"]["errors"] == 12 + 8
