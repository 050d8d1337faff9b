"""Customers' own credentials: one Airflow connection per customer and provider, by convention
``cp_<customer_id>_<provider>`` (lowercase), resolved when a run's pipeline starts through Airflow's
secrets backends (``AIRFLOW_CONN_*`` variables, Google Secret Manager, Vault, ... as configured, then
Airflow's own connections through the API server): never from a config row, never logged (Airflow
masks a connection's password and secret extras in task logs once fetched).

Off unless ``CP_CUSTOMER_CREDENTIALS=required``. Then a run whose customer has no such connection
fails without a retry, naming the connection to add: the config cannot run until someone does. What a
template does with them: a GCP customer's connection (``google_cloud_platform``) is the identity its
pipeline reads and writes the data plane with; the shipped templates of the other providers read the
provider's export already in BigQuery, so for them the connection is checked and handed over unused."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from customer_pipelines.runs.failures import InvalidPipelineConfig

GCP_CONN_TYPE = "google_cloud_platform"


class MissingCustomerCredentials(InvalidPipelineConfig):
    """The customer's connection is not defined in any secrets backend, or is not of the kind the
    pipeline needs: a retry cannot fix it."""


def customer_connection_id(customer_id: str, provider: str) -> str:
    """The Airflow connection holding a customer's credentials for a provider."""
    return f"cp_{customer_id}_{provider}".lower()


@dataclass(frozen=True)
class CustomerCredentials:
    conn_id: str
    conn_type: str | None
    login: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, repr=False)
    password: str | None = field(default=None, repr=False)


def resolve_credentials(customer_id: str, provider: str) -> CustomerCredentials:
    """The customer's connection for ``provider``, through Airflow's secrets backends."""
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    conn_id = customer_connection_id(customer_id, provider)
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        raise MissingCustomerCredentials(
            f"customer {customer_id} has no {provider} credentials: no Airflow connection {conn_id!r} in any "
            f"secrets backend (add it in Admin > Connections, with `airflow connections add {conn_id} ...`, "
            f"or as {conn_id} in the configured secrets backend)"
        ) from None
    if provider == "GCP" and conn.conn_type != GCP_CONN_TYPE:
        raise MissingCustomerCredentials(
            f"Airflow connection {conn_id!r} of customer {customer_id} is of type {conn.conn_type!r}; "
            f"its GCP credentials need a {GCP_CONN_TYPE!r} connection"
        )
    return CustomerCredentials(
        conn_id=conn_id,
        conn_type=conn.conn_type,
        login=conn.login,
        extra=conn.extra_dejson,
        password=conn.password,
    )
