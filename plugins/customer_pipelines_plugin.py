"""The Airflow plugin of this project: registers the customer DAGs' timetable (Airflow serialises a
custom timetable only when a plugin names it), the run-state listeners, and the REST API, which
Airflow's API server serves under /customer-pipelines/api/v1."""

from airflow.plugins_manager import AirflowPlugin

from customer_pipelines.api.app import URL_PREFIX, create_app_or_refusal
from customer_pipelines.fleet.timetables import CustomerCronTimetable
from customer_pipelines.runs import listeners


class CustomerPipelinesPlugin(AirflowPlugin):
    name = "customer_pipelines"
    timetables = [CustomerCronTimetable]
    # Run-state transitions the operator's own code never sees (see runs/listeners.py).
    listeners = [listeners]
    fastapi_apps = [{"app": create_app_or_refusal(), "url_prefix": URL_PREFIX, "name": "Customer pipelines API"}]
