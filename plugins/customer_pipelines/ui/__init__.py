"""The fleet page: a view by customer added to the Airflow UI by the plugin (an external view served by
the plugin's own FastAPI app, over the REST API's services)."""

from urllib.parse import quote

URL_PREFIX = "/customer-pipelines/fleet"
"""Where Airflow's API server serves the fleet page (the plugin's FastAPI app)."""


def customer_page_path(customer_id: str) -> str:
    """A customer's page (the DAGs' docs link to it; light to import at parse time)."""
    return f"{URL_PREFIX}/customers/{quote(customer_id, safe='')}"
