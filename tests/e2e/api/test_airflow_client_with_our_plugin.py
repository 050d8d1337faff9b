"""Airflow's official client (apache-airflow-client) still works against the API server that serves
our plugin's app: one call of each kind the platform relies on. Our app is mounted under its own
prefix and must neither shadow nor break Airflow's own API."""

from __future__ import annotations

import pytest

from tests_support import config_body, onboard

pytestmark = pytest.mark.e2e


def test_the_official_airflow_client_reads_pauses_triggers_and_lists_with_our_app_loaded(stack, api):
    import airflow_client.client as airflow_client
    from airflow_client.client.api import dag_api, dag_run_api, import_error_api, monitor_api, plugin_api, pool_api
    from airflow_client.client.models import DAGPatchBody, TriggerDAGRunPostBody

    _, client = stack
    onboard(api, "cust_official_client")
    created = api.admin("POST", "/customers/cust_official_client/configs", json=config_body("oc_cost"))
    dag_id = created.json()["dag_id"]
    client.wait_for_dags([dag_id], timeout=120)

    configuration = airflow_client.Configuration(host=api.base.split("/customer-pipelines")[0])
    configuration.access_token = api.admin_token
    with airflow_client.ApiClient(configuration) as session:
        assert monitor_api.MonitorApi(session).get_health().metadatabase.status == "healthy"
        dags = dag_api.DAGApi(session)
        assert dags.get_dag(dag_id).dag_id == dag_id
        assert dag_id in {d.dag_id for d in dags.get_dags(limit=100, dag_id_pattern="cust_official_client").dags}
        assert dags.patch_dag(dag_id, DAGPatchBody(is_paused=True)).is_paused is True
        assert dags.patch_dag(dag_id, DAGPatchBody(is_paused=False)).is_paused is False
        run = dag_run_api.DagRunApi(session).trigger_dag_run(dag_id, TriggerDAGRunPostBody(logical_date=None))
        assert run.dag_id == dag_id
        assert dag_run_api.DagRunApi(session).get_dag_run(dag_id, run.dag_run_id).dag_run_id == run.dag_run_id
        assert pool_api.PoolApi(session).get_pool("cp_cust_official_client").slots == 3
        import_error_api.ImportErrorApi(session).get_import_errors()
        plugins = plugin_api.PluginApi(session).get_plugins().plugins
        ours = next(p for p in plugins if p.name == "customer_pipelines")
        assert ours.fastapi_apps and ours.fastapi_apps[0].url_prefix == "/customer-pipelines/api/v1"
