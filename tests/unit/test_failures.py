"""Which errors are retried: BigQuery's own error classes, also when the store wraps them."""

from __future__ import annotations

import pytest
from google.api_core import exceptions as google_errors

from customer_pipelines.failures import InvalidPipelineConfig, is_retryable
from customer_pipelines.store import StoreError


def _wrapped(error: BaseException) -> StoreError:
    try:
        raise StoreError("templates/cost_billing.sql: failed") from error
    except StoreError as wrapped:
        return wrapped


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
def test_errors_a_retry_cannot_fix_fail_at_once_even_when_wrapped(error):
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
