"""Failure policy of a try: is it worth a retry, and whose failure is it.

Retrying bad credentials, missing permissions, invalid configuration or a missing resource only
burns quota and delays the alert; a rate limit, an exhausted quota, a backend error or a conflict
with a concurrent update of a shared table goes away on its own, so those are retried with the
DAG's backoff. BigQuery says which by the error's ``reason`` (the HTTP class alone does not:
``quotaExceeded`` is a 403 like ``accessDenied``, a concurrent-update conflict a 400 like a syntax
error).

Whose failure: only the customer's own pipeline (its template, parameters, data or credentials)
counts toward the failure policy's auto-pause. A failure before the pipeline started (quota
ledger, snapshot, settings) is the platform's and must never pause a customer's config."""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.api_core import exceptions as google_errors
from pydantic import ValidationError

from customer_pipelines.runs.mirror import ErrorType


class InvalidPipelineConfig(ValueError):
    """The config (or its parameters) cannot be run as it is; fix the config, do not retry."""


BIGQUERY_REASON_IS_RETRYABLE: dict[str, bool] = {
    # Transient: the same job succeeds later (BigQuery's error messages page says retry with backoff).
    "rateLimitExceeded": True,
    "quotaExceeded": True,
    "backendError": True,
    "internalError": True,
    "badGateway": True,
    "jobBackendError": True,
    "jobInternalError": True,
    "jobRateLimitExceeded": True,
    "tableUnavailable": True,
    # Final: the query, its target or the credentials must change first.
    "invalidQuery": False,
    "invalid": False,
    "accessDenied": False,
    "notFound": False,
    "duplicate": False,
    "billingNotEnabled": False,
    "billingTierLimitExceeded": False,
    "blocked": False,
    "invalidUser": False,
    "notImplemented": False,
    "policyViolation": False,
    "resourceInUse": False,
    "resourcesExceeded": False,
    "responseTooLarge": False,
}
"""BigQuery's error reasons (``ErrorProto.reason``) and whether a retry can succeed."""

CONCURRENT_UPDATE = re.compile(r"due to concurrent update", re.IGNORECASE)
"""'Could not serialize access to table ... due to concurrent update' and 'Transaction is aborted
due to concurrent update': reason ``invalidQuery``, yet a retry of the MERGE succeeds."""

NON_RETRYABLE: tuple[type[BaseException], ...] = (
    InvalidPipelineConfig,
    ValidationError,
    google_errors.Unauthenticated,
    google_errors.PermissionDenied,
    google_errors.Forbidden,
    google_errors.NotFound,
    google_errors.BadRequest,
)
"""Final when BigQuery gave no reason this module knows (or none at all, e.g. gRPC errors)."""


def bigquery_reason(error: BaseException) -> str | None:
    """The ``reason`` of a google API error's first ErrorProto, as google-cloud-bigquery's own
    retry predicate reads it; None for errors without one."""
    try:
        reason = error.errors[0]["reason"]  # type: ignore[attr-defined]
    except (AttributeError, IndexError, KeyError, TypeError):
        return None
    return reason if isinstance(reason, str) else None


def bigquery_reason_of(error: BaseException) -> str | None:
    """The reason of the error or of the first error in its causes that has one."""
    seen: BaseException | None = error
    while seen is not None:
        if reason := bigquery_reason(seen):
            return reason
        seen = seen.__cause__
    return None


def _is_concurrent_update(error: BaseException) -> bool:
    messages = [str(error)]
    for proto in getattr(error, "errors", None) or []:
        if isinstance(proto, dict):
            messages.append(str(proto.get("message", "")))
    return any(CONCURRENT_UPDATE.search(m) for m in messages)


def _verdict(error: BaseException) -> bool | None:
    """True/False when this error decides retryability, None when its cause should."""
    if isinstance(error, google_errors.GoogleAPICallError):
        if _is_concurrent_update(error):
            return True
        decided = BIGQUERY_REASON_IS_RETRYABLE.get(bigquery_reason(error) or "")
        if decided is not None:
            return decided
    if isinstance(error, NON_RETRYABLE):
        return False
    return None


def is_retryable(error: BaseException) -> bool:
    """False if the error, or the first error it was raised from that says (the store wraps
    BigQuery's), is one a retry cannot fix."""
    seen: BaseException | None = error
    while seen is not None:
        verdict = _verdict(seen)
        if verdict is not None:
            return verdict
        seen = seen.__cause__
    return True


@dataclass(frozen=True)
class TryFailure:
    error_type: ErrorType
    retryable: bool


def classify_failure(error: BaseException, *, pipeline_started: bool, timed_out: bool) -> TryFailure:
    """Whose failure a failed try is and whether to retry it. Before the pipeline started nothing
    of the customer's ran: the platform failed (quota ledger, snapshot, settings, a wait for the
    ledger cut off by the execution timeout); it is retried and never counts toward auto-pause."""
    if not pipeline_started:
        return TryFailure(ErrorType.PLATFORM, retryable=True)
    if timed_out:
        return TryFailure(ErrorType.TIMEOUT, retryable=True)
    return TryFailure(ErrorType.PIPELINE, retryable=is_retryable(error))
