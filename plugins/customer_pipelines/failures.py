"""Failure policy: which errors are worth a retry. Retrying bad credentials, missing permissions,
invalid configuration or a missing resource only burns quota and delays the alert."""

from __future__ import annotations

from google.api_core import exceptions as google_errors
from pydantic import ValidationError


class InvalidPipelineConfig(ValueError):
    """The config (or its parameters) cannot be run as it is; fix the config, do not retry."""


NON_RETRYABLE: tuple[type[BaseException], ...] = (
    InvalidPipelineConfig,
    ValidationError,
    google_errors.Unauthenticated,
    google_errors.PermissionDenied,
    google_errors.Forbidden,
    google_errors.NotFound,
    google_errors.BadRequest,
)


def is_retryable(error: BaseException) -> bool:
    """False if the error, or any error it was raised from (the store wraps BigQuery's), is one a
    retry cannot fix."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, NON_RETRYABLE):
            return False
        seen = seen.__cause__
    return True
