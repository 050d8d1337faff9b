"""Which errors are retried, and whose failure a try is.

BigQuery's errors are built the two ways google-cloud-bigquery raises them: from a finished job's
``status.errorResult`` (``QueryJob.result()`` raises what ``_error_result_to_exception`` makes of
it) and from an HTTP error reply of the API (``from_http_response``, as the client's JSON connection
does; ``jobs.getQueryResults`` reports a failed job that way). The emulator cannot produce these
reasons, hence the hand-built replies."""

from __future__ import annotations

import json

import pytest
import requests
from google.api_core import exceptions as google_errors
from google.cloud.bigquery.job.base import _ERROR_REASON_TO_EXCEPTION, _error_result_to_exception

from customer_pipelines.bigquery.store import StoreError
from customer_pipelines.runs.failures import (
    BIGQUERY_REASON_IS_RETRYABLE,
    InvalidPipelineConfig,
    bigquery_reason_of,
    classify_failure,
    is_retryable,
)
from customer_pipelines.runs.mirror import ErrorType

CONCURRENT_UPDATE_MESSAGE = (
    "Could not serialize access to table demo-project:customer_pipeline_data.cost_daily due to concurrent update"
)

# (reason, message, retry expected)
BIGQUERY_CASES = [
    ("rateLimitExceeded", "Exceeded rate limits: too many table update operations for this table", True),
    ("quotaExceeded", "Quota exceeded: Your project exceeded quota for concurrent queries", True),
    ("backendError", "Backend error. Job aborted.", True),
    ("internalError", "An internal error occurred and the request could not be completed.", True),
    ("jobBackendError", "The job failed due to a backend error.", True),
    ("jobRateLimitExceeded", "Job exceeded rate limits", True),
    ("tableUnavailable", "Table is unavailable", True),
    ("invalidQuery", CONCURRENT_UPDATE_MESSAGE, True),
    ("invalidQuery", "Transaction is aborted due to concurrent update against table cost_daily", True),
    ("invalidQuery", "Syntax error: Unexpected identifier at [3:1]", False),
    ("invalid", "Invalid value for type: INT64", False),
    ("accessDenied", "Access Denied: Table cost_daily: User does not have permission", False),
    ("notFound", "Not found: Table demo-project:customer_pipeline_data.cost_daily", False),
    ("billingNotEnabled", "Billing has not been enabled for this project", False),
    ("resourcesExceeded", "Resources exceeded during query execution", False),
    ("responseTooLarge", "Response too large to return", False),
]


def _from_job_error_result(reason: str, message: str) -> google_errors.GoogleAPICallError:
    error_result = {"reason": reason, "message": message, "location": "query"}
    return _error_result_to_exception(error_result, [error_result])


def _from_http_error_reply(reason: str, message: str) -> google_errors.GoogleAPICallError:
    code = _ERROR_REASON_TO_EXCEPTION.get(reason, 500)
    response = requests.Response()
    response.status_code = code
    response._content = json.dumps(
        {
            "error": {
                "code": code,
                "message": message,
                "errors": [{"domain": "global", "reason": reason, "message": message}],
            }
        }
    ).encode()
    response.request = requests.Request(
        "GET", "https://bigquery.googleapis.com/bigquery/v2/projects/p/queries/j"
    ).prepare()
    return google_errors.from_http_response(response)


def _wrapped(error: BaseException) -> StoreError:
    try:
        raise StoreError("templates/cost_billing.sql: failed") from error
    except StoreError as wrapped:
        return wrapped


@pytest.mark.parametrize("raise_as", [_from_job_error_result, _from_http_error_reply], ids=["job", "http"])
@pytest.mark.parametrize(("reason", "message", "retry"), BIGQUERY_CASES, ids=[f"{c[0]}-{c[2]}" for c in BIGQUERY_CASES])
def test_a_bigquery_error_is_retried_by_its_reason_not_its_http_class(raise_as, reason, message, retry):
    error = raise_as(reason, message)
    assert error.errors[0]["reason"] == reason
    assert is_retryable(error) is retry
    assert is_retryable(_wrapped(error)) is retry  # as the store raises it
    assert bigquery_reason_of(_wrapped(error)) == reason


def test_every_reason_the_client_maps_has_a_decision():
    """A reason google-cloud-bigquery knows (it maps each to an HTTP class) is in the table, so none
    falls back to its class by accident (except 'stopped', a cancelled job, which is not a failure)."""
    assert set(_ERROR_REASON_TO_EXCEPTION) - set(BIGQUERY_REASON_IS_RETRYABLE) == {"stopped"}


@pytest.mark.parametrize(
    "error",
    [
        google_errors.Unauthenticated("bad credentials"),
        google_errors.PermissionDenied("no access to the dataset"),
        google_errors.Forbidden("billing disabled"),
        google_errors.NotFound("table not found"),
        google_errors.BadRequest("invalid query"),
        InvalidPipelineConfig("unknown template"),
    ],
)
def test_errors_without_a_known_reason_fail_at_once_by_their_class_even_when_wrapped(error):
    assert not is_retryable(error)
    assert not is_retryable(_wrapped(error))


@pytest.mark.parametrize(
    "error",
    [
        google_errors.ServiceUnavailable("backend error"),
        google_errors.TooManyRequests("rate limited"),
        google_errors.InternalServerError("internal"),
        ConnectionError("connection reset"),
        TimeoutError("read timed out"),
    ],
)
def test_transient_errors_are_retried(error):
    assert is_retryable(error)
    assert is_retryable(_wrapped(error))


def test_a_failure_before_the_pipeline_started_is_the_platforms_and_retried_even_if_final_by_class():
    for error in (RuntimeError("CP_QUOTA_DB_URL is not set"), google_errors.NotFound("snapshot table")):
        failure = classify_failure(error, pipeline_started=False, timed_out=False)
        assert (failure.error_type, failure.retryable) == (ErrorType.PLATFORM, True)
    waited_at_gate = classify_failure(TimeoutError(), pipeline_started=False, timed_out=True)
    assert waited_at_gate.error_type is ErrorType.PLATFORM


def test_a_failure_of_the_pipeline_is_the_customers():
    not_found = _wrapped(_from_job_error_result("notFound", "Not found: Table cost_daily"))
    quota = _wrapped(_from_job_error_result("quotaExceeded", "Quota exceeded"))
    assert classify_failure(not_found, pipeline_started=True, timed_out=False).error_type is ErrorType.PIPELINE
    assert not classify_failure(not_found, pipeline_started=True, timed_out=False).retryable
    assert classify_failure(quota, pipeline_started=True, timed_out=False).retryable
    assert classify_failure(TimeoutError(), pipeline_started=True, timed_out=True).error_type is ErrorType.TIMEOUT
