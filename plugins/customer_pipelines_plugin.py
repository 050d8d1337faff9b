"""The Airflow plugin of this project: registers the customer DAGs' timetable (Airflow serialises a
custom timetable only when a plugin names it), the run-state listeners, the REST API, which Airflow's
API server serves under /customer-pipelines/api/v1, and the fleet page (/customer-pipelines/fleet,
the UI's "Customers" page), served over the same services."""

from functools import cached_property
from typing import Any

from airflow.plugins_manager import AirflowPlugin

from customer_pipelines.fleet.timetables import CustomerCronTimetable
from customer_pipelines.runs import listeners
from customer_pipelines.ui import URL_PREFIX as PAGE_PREFIX


class CustomerPipelinesPlugin(AirflowPlugin):
    name = "customer_pipelines"
    timetables = [CustomerCronTimetable]
    # Run-state transitions the operator's own code never sees (see runs/listeners.py).
    listeners = [listeners]
    # The fleet page in the UI's navigation (shown inside the UI at /plugin/customers).
    external_views = [
        {
            "name": "Customers",
            "href": f"{PAGE_PREFIX}/",
            "destination": "nav",
            "url_route": "customers",
            "category": "browse",
        }
    ]

    @cached_property
    def fastapi_apps(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The REST API and the fleet page, built when first asked for (Airflow's API server, `airflow
        plugins`). Every process that loads plugins loads this one, each task too (for its listeners):
        built at import, the two apps were half a task's CPU under a burst (bench/burst.py, py-spy)."""
        from customer_pipelines.api.app import URL_PREFIX, create_app_or_refusal
        from customer_pipelines.ui.app import create_fleet_page_or_refusal

        api = create_app_or_refusal()
        return [
            {"app": api, "url_prefix": URL_PREFIX, "name": "Customer pipelines API"},
            {
                "app": create_fleet_page_or_refusal(api),
                "url_prefix": PAGE_PREFIX,
                "name": "Customer pipelines fleet page",
            },
        ]
