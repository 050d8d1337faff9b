"""The embedded system end to end: real Airflow 3.3 (scheduler, dag-processor, API server,
LocalExecutor on PostgreSQL), the BigQuery emulator, the demo fleet."""

from __future__ import annotations

import json
import stat
import time

import pytest

from customer_pipelines.bigquery.store import BigQueryStore

pytestmark = pytest.mark.e2e

DEMO = {
    "cust_acme_001.acme_gcp_cost_daily": ("cust_acme_001", "GCP", "COST", "cost_billing"),
    "cust_acme_001.acme_gcp_security_weekly": ("cust_acme_001", "GCP", "SECURITY", "security_audit"),
    "cust_globex_001.globex_aws_cost_daily": ("cust_globex_001", "AWS", "COST", "cost_billing"),
    "cust_globex_001.globex_azure_compliance_monthly": ("cust_globex_001", "AZURE", "COMPLIANCE", "compliance_report"),
}


def test_demo_dags_are_registered_unpaused_and_findable_by_tags(stack):
    _, client = stack
    client.wait_for_dags(list(DEMO), timeout=240)
    for dag_id, (customer, provider, domain, template) in DEMO.items():
        dag = client.dag(dag_id)
        tags = {t["name"] for t in dag["tags"]}
        assert {f"customer:{customer}", f"provider:{provider}", f"domain:{domain}", f"template:{template}"} <= tags
        assert dag["is_paused"] is False
    assert client.import_errors() == []
    assert {d["dag_id"] for d in client.dags(tag="customer:cust_acme_001")} == {
        d for d, v in DEMO.items() if v[0] == "cust_acme_001"
    }


def test_each_customer_has_a_pool_sized_by_its_plan(stack):
    _, client = stack
    assert client.pool("cp_cust_acme_001")["slots"] == 3  # PROFESSIONAL
    assert client.pool("cp_cust_globex_001")["slots"] == 10  # SCALE


def test_first_deploy_fires_no_past_tick(stack):
    _, client = stack
    client.wait_for_dags(list(DEMO), timeout=240)
    time.sleep(15)  # several scheduler loops after the DAGs became active
    for dag_id in DEMO:
        scheduled = [r for r in client.dag_runs(dag_id) if r["run_type"] == "scheduled"]
        assert scheduled == [], f"{dag_id} ran a tick nobody asked for: {scheduled}"


def test_triggered_run_is_mirrored_running_then_completed(stack):
    info, client = stack
    dag_id = "cust_acme_001.acme_gcp_cost_daily"
    client.wait_for_dags([dag_id], timeout=240)

    run = client.trigger(dag_id)
    finished = client.wait_for_run(dag_id, run["dag_run_id"], timeout=240)

    assert finished["state"] == "success"
    store = BigQueryStore(info.settings)
    events = store.query("queries/runs_of_dag_run.sql", {"dag_id": dag_id, "run_id": run["dag_run_id"]})
    assert [(e["state"], e["try_number"]) for e in events] == [
        ("SCHEDULED", None),  # the scheduler's listener: the run was created ...
        ("QUEUED", None),  # ... and started
        ("RUNNING", 1),  # the operator: its try
        ("COMPLETED", 1),
    ]
    completed = events[-1]
    assert completed["customer_id"] == "cust_acme_001" and completed["config_id"] == "acme_gcp_cost_daily"
    assert completed["hostname"] and completed["duration_seconds"] > 0
    assert completed["details"]["rows_written"] == 3

    # Airflow's log servers are off (they would listen on every interface): the API server reads the
    # try's log from the folder the stack's components share, where Airflow wrote it owner-only.
    [ti] = client.task_instances(dag_id, run["dag_run_id"])
    log = json.dumps(client.task_log(dag_id, run["dag_run_id"], ti["task_id"], ti["try_number"]))
    logs = info.settings.state_dir / "airflow" / "logs"
    assert str(logs) in log and "Could not read served logs" not in log
    entries = [(p, p.lstat()) for p in logs.rglob("*") if not p.is_symlink()]
    files = {str(p): stat.S_IMODE(st.st_mode) for p, st in entries if stat.S_ISREG(st.st_mode)}
    folders = {str(p): stat.S_IMODE(st.st_mode) for p, st in entries if stat.S_ISDIR(st.st_mode)}
    assert set(files.values()) == {0o600}, files
    assert set(folders.values()) == {0o700}, folders
