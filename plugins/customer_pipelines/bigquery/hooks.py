"""The one way this project talks to BigQuery: the google provider's BigQueryHook, which on a
configured emulator uses anonymous credentials and the emulator's endpoint, and otherwise the
Airflow connection's credentials (service account, workload identity, ADC) unchanged.

A hook serves one plane: the control plane (configs, run-state mirror, views) or the data plane
(the customers' data the templates read and write), each with its own connection, project and
emulator; by default both are the same BigQuery."""

from __future__ import annotations

import json
from typing import Any

from airflow.providers.google.cloud.hooks.bigquery import BigQueryHook
from airflow.sdk import Connection
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from customer_pipelines.settings import PLANES, Plane, Settings, get_settings


class CustomerPipelinesBigQueryHook(BigQueryHook):
    def __init__(self, settings: Settings | None = None, plane: Plane = "control", **kwargs: Any) -> None:
        if plane not in PLANES:
            raise ValueError(f"unknown BigQuery plane {plane!r}: one of {PLANES}")
        self.settings = settings or get_settings()
        self.plane = plane
        kwargs.setdefault("gcp_conn_id", self.settings.conn_id_of(plane))
        kwargs.setdefault("location", self.settings.bq_location)
        kwargs.setdefault("use_legacy_sql", False)
        super().__init__(**kwargs)

    @property
    def project(self) -> str:
        return self.settings.project_of(self.plane)

    @property
    def emulator_url(self) -> str | None:
        """This plane's emulator, or None for real BigQuery."""
        return self.settings.emulator_url_of(self.plane)

    def get_connection(self, conn_id: str) -> Connection:  # type: ignore[override]
        if self.emulator_url is not None:
            # An emulator takes no credentials (get_client below), so no connection has to be defined
            # and none is looked up: from a task each lookup is a round trip to Airflow's API server
            # (two per run, one per plane), measured under a burst of 200 runs at one tick.
            return Connection(
                conn_id=conn_id,
                conn_type="google_cloud_platform",
                extra=json.dumps({"project": self.project}),
            )
        return super().get_connection(conn_id)

    def get_client(self, project_id: str | None = None, location: str | None = None) -> bigquery.Client:
        emulator = self.emulator_url
        if emulator is None:
            return super().get_client(project_id=project_id or self.project, location=location)
        # Anonymous credentials only ever go to an emulator the settings name explicitly.
        return bigquery.Client(
            project=project_id or self.project,
            location=location or self.settings.bq_location,
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": emulator},
        )
