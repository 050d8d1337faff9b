"""Customers' credentials: one Airflow connection per customer and provider, resolved through
Airflow's secrets backends (here the environment-variable backend, the first Airflow asks); a missing
one is a failure of the customer's pipeline that no retry can fix, and says which connection to add."""

from __future__ import annotations

import json

import pytest

from customer_pipelines.runs.credentials import (
    MissingCustomerCredentials,
    customer_connection_id,
    resolve_credentials,
)
from customer_pipelines.runs.failures import classify_failure
from customer_pipelines.runs.mirror import ErrorType


def test_the_connection_of_a_customer_and_provider_is_named_by_convention():
    assert customer_connection_id("cust_acme_001", "GCP") == "cp_cust_acme_001_gcp"
    assert customer_connection_id("cust-b", "OPENAI") == "cp_cust-b_openai"


def test_a_connection_in_a_secrets_backend_is_resolved_and_its_secret_never_printed(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CP_CUST_ACME_001_AWS",
        json.dumps({"conn_type": "aws", "login": "AKIAEXAMPLE", "password": "s3cr3t-value", "extra": {"region": "eu"}}),
    )
    credentials = resolve_credentials("cust_acme_001", "AWS")
    assert (credentials.conn_id, credentials.conn_type, credentials.login) == (
        "cp_cust_acme_001_aws",
        "aws",
        "AKIAEXAMPLE",
    )
    assert credentials.password == "s3cr3t-value" and credentials.extra == {"region": "eu"}
    assert "s3cr3t-value" not in repr(credentials) and "region" not in repr(credentials)


def test_a_missing_connection_fails_the_pipeline_without_a_retry_naming_the_connection(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_CP_CUST_NOBODY_GCP", raising=False)
    with pytest.raises(MissingCustomerCredentials) as raised:
        resolve_credentials("cust_nobody", "GCP")
    assert "cp_cust_nobody_gcp" in str(raised.value) and "cust_nobody" in str(raised.value)
    failure = classify_failure(raised.value, pipeline_started=True, timed_out=False)
    assert (failure.error_type, failure.retryable) == (ErrorType.PIPELINE, False)


def test_a_gcp_customers_connection_of_another_type_is_refused(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_CP_CUST_ACME_001_GCP", json.dumps({"conn_type": "aws", "login": "x"}))
    with pytest.raises(MissingCustomerCredentials, match="google_cloud_platform"):
        resolve_credentials("cust_acme_001", "GCP")
    monkeypatch.setenv("AIRFLOW_CONN_CP_CUST_ACME_001_GCP", json.dumps({"conn_type": "google_cloud_platform"}))
    assert resolve_credentials("cust_acme_001", "GCP").conn_type == "google_cloud_platform"
