"""The Airflow plugin of this project: registers the customer DAGs' timetable (Airflow serialises a
custom timetable only when a plugin names it) and the run-state listeners. The REST API and the
fleet page attach here."""

from airflow.plugins_manager import AirflowPlugin

from customer_pipelines.fleet.timetables import CustomerCronTimetable
from customer_pipelines.runs import listeners


class CustomerPipelinesPlugin(AirflowPlugin):
    name = "customer_pipelines"
    timetables = [CustomerCronTimetable]
    # Run-state transitions the operator's own code never sees (see listeners.py).
    listeners = [listeners]
