"""Config models: what a row of ``customer_pipeline_configs`` (and its customer) must look like to
become a DAG. Validation happens here and only here; everything downstream trusts these types."""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any
from zoneinfo import available_timezones

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from customer_pipelines.templates import TEMPLATES

CUSTOMER_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
CONFIG_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
_CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)
_CONFIG_ID = re.compile(CONFIG_ID_PATTERN)

CRON_ALIASES: dict[str, str] = {
    "@hourly": "@hourly",
    "@daily": "@daily",
    "@midnight": "@daily",
    "@weekly": "@weekly",
    "@monthly": "@monthly",
    "@yearly": "@yearly",
    "@annually": "@yearly",
}
"""The cron aliases a config may use, each stored under the name Airflow's timetables expand
(airflow.utils.dates.cron_presets), so the DAG's schedule and its description are the 5-field form.
croniter (the sync's next ticks) reads them all; Airflow's ``@quarterly`` is not here because
croniter cannot parse it, and ``@reboot`` never fires on a schedule."""


class Provider(StrEnum):
    GCP = "GCP"
    AWS = "AWS"
    AZURE = "AZURE"
    OPENAI = "OPENAI"
    CLAUDE = "CLAUDE"


class Domain(StrEnum):
    COST = "COST"
    SECURITY = "SECURITY"
    COMPLIANCE = "COMPLIANCE"
    OBSERVABILITY = "OBSERVABILITY"


class CustomerStatus(StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    CHURNED = "CHURNED"


class Plan(StrEnum):
    STARTER = "STARTER"
    PROFESSIONAL = "PROFESSIONAL"
    SCALE = "SCALE"
    ENTERPRISE = "ENTERPRISE"


class SkipReason(StrEnum):
    """Why a run did not start its pipeline (``skip_reason`` of a SKIPPED transition)."""

    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    CUSTOMER_INACTIVE = "CUSTOMER_INACTIVE"
    NO_SUBSCRIPTION = "NO_SUBSCRIPTION"
    CONFIG_INACTIVE = "CONFIG_INACTIVE"


@lru_cache(maxsize=1)
def _iana_timezones() -> frozenset[str]:
    """IANA zone names, without the host-specific files zoneinfo also opens ('localtime', the
    leap-second 'right/' zones, 'posix/' copies)."""
    return frozenset(
        z
        for z in available_timezones()
        if not z.startswith(("right/", "posix/")) and z not in ("localtime", "posixrules", "Factory")
    )


def dag_id_for(customer_id: str, config_id: str) -> str:
    """Stable, unique and readable: ids are immutable and customer ids contain no dot."""
    return f"{customer_id}.{config_id}"


def pool_name_for(customer_id: str, prefix: str = "cp_") -> str:
    return f"{prefix}{customer_id}"


class Customer(BaseModel):
    """A customer as the factory and the quota gate see it: status plus the current plan's limits.

    ``plan`` and the limits are those of the subscription in force; all NULL when none is (it lapsed
    or never existed: ``snapshot_customers.sql`` LEFT JOINs it). Such a customer is still a customer:
    its DAGs and pool stay, held until a subscription is in force again."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    customer_id: str = Field(pattern=CUSTOMER_ID_PATTERN)
    company_name: str = ""
    status: CustomerStatus
    plan: Plan | None = None
    daily_run_limit: int | None = Field(default=None, ge=0)
    monthly_run_limit: int | None = Field(default=None, ge=0)
    max_concurrent_runs: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _plan_has_its_concurrency(self) -> Customer:
        if self.plan is not None and self.max_concurrent_runs is None:
            raise ValueError(f"max_concurrent_runs: missing for plan {self.plan.value} (a subscription always has one)")
        return self

    @property
    def is_active(self) -> bool:
        return self.status is CustomerStatus.ACTIVE

    @property
    def has_subscription(self) -> bool:
        return self.plan is not None


def customer_hold_reason(customer: Customer | None) -> SkipReason | None:
    """Why nothing of this customer may start now, or None: it may (its pool gets the plan's slots)."""
    if customer is None or not customer.is_active:
        return SkipReason.CUSTOMER_INACTIVE
    if not customer.has_subscription:
        return SkipReason.NO_SUBSCRIPTION
    return None


class RetryConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_attempts: int = Field(default=3, ge=1, le=10)
    base_delay_minutes: float = Field(default=5.0, gt=0, le=24 * 60)
    backoff_multiplier: float = Field(default=2.0, ge=1, le=10)


class PipelineConfig(BaseModel):
    """One customer pipeline: becomes one DAG."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    config_id: str
    customer_id: str
    display_name: str = Field(default="", max_length=200)
    provider: Provider
    domain: Domain
    pipeline_template: str
    is_active: bool = True
    schedule_cron: str
    timezone: str = "UTC"
    priority: int = Field(default=5, ge=1, le=10)
    parameters: dict[str, Any] = Field(default_factory=dict)
    retry_config: RetryConfig = Field(default_factory=RetryConfig)
    max_execution_duration_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    sla_breach_threshold_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    version: int = Field(default=1, ge=1)
    updated_at: datetime | None = None

    @field_validator("config_id")
    @classmethod
    def _config_id_is_safe(cls, value: str) -> str:
        if not _CONFIG_ID.match(value):
            raise ValueError("must be 1-128 characters of letters, digits, '_' or '-', starting with a letter or digit")
        return value

    @field_validator("customer_id")
    @classmethod
    def _customer_id_is_safe(cls, value: str) -> str:
        if not _CUSTOMER_ID.match(value):
            raise ValueError(
                "must be 1-63 characters of lower-case letters, digits, '_' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("schedule_cron")
    @classmethod
    def _cron_is_valid(cls, value: str) -> str:
        value = " ".join(value.split())
        if value.startswith("@"):
            alias = CRON_ALIASES.get(value.lower())
            if alias is None:
                raise ValueError(f"not a supported cron alias: {printable(value)} (one of {', '.join(CRON_ALIASES)})")
            value = alias
        elif len(value.split(" ")) != 5 or not croniter.is_valid(value):
            raise ValueError(f"not a valid 5-field cron expression or alias: {printable(value)}")
        try:  # valid syntax can still never fire (e.g. 31 February)
            croniter(value, datetime(2000, 1, 1)).get_next(datetime)
        except CroniterBadDateError:
            raise ValueError(f"cron expression never fires: {printable(value)}") from None
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone_is_iana(cls, value: str) -> str:
        if value not in _iana_timezones():
            raise ValueError(f"unknown IANA timezone: {printable(value)}")
        return value

    @field_validator("display_name", mode="before")
    @classmethod
    def _null_display_name_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value  # the column is nullable; the config is still valid

    @field_validator("parameters", "retry_config", mode="before")
    @classmethod
    def _json_text_is_decoded(cls, value: Any) -> Any:
        # BigQuery JSON columns arrive as text through some clients.
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else None
        return {} if value is None else value

    @model_validator(mode="after")
    def _template_fits(self) -> PipelineConfig:
        template = TEMPLATES.get(self.pipeline_template)
        if template is None:
            known = ", ".join(sorted(TEMPLATES))
            raise ValueError(
                f"pipeline_template: unknown template {printable(self.pipeline_template)} (known: {known})"
            )
        if self.domain.value != template.domain or self.provider.value not in template.providers:
            raise ValueError(
                f"pipeline_template: {template.name} runs {template.domain} pipelines for "
                f"{', '.join(sorted(template.providers))}, not {self.provider.value}/{self.domain.value}"
            )
        try:
            template.params_model.model_validate(self.parameters)
        except ValidationError as exc:
            raise ValueError(f"parameters: {first_errors(exc)}") from None
        return self

    @property
    def dag_id(self) -> str:
        return dag_id_for(self.customer_id, self.config_id)


def hold_reason(config: PipelineConfig | None, customer: Customer | None) -> SkipReason | None:
    """Why runs of ``config`` must not start now, or None: they may. The one rule behind a DAG's
    paused flag (the factory's on creation, the syncer's every round) and the operator's check when a
    run starts; ``config`` None is a config the snapshot no longer has (deleted)."""
    if config is None or not config.is_active:
        return SkipReason.CONFIG_INACTIVE
    return customer_hold_reason(customer)


def is_runnable(config: PipelineConfig, customer: Customer | None) -> bool:
    """Whether a config's DAG may run now: nothing holds it (see hold_reason)."""
    return hold_reason(config, customer) is None


class ConfigError(BaseModel):
    """A config that cannot become a DAG, and why; shown to operators. Holds the row's values as
    they are; its text shows them escaped, so one bad row is always one readable line (in
    Airflow's import errors, ``validate`` and the logs)."""

    model_config = ConfigDict(frozen=True)

    config_id: str | None
    """None: the row has no config_id."""
    customer_id: str | None
    reason: str

    def __str__(self) -> str:
        config = "<missing>" if self.config_id is None else printable(self.config_id)
        customer = f" (customer {printable(self.customer_id)})" if self.customer_id else ""
        return f"config {config}{customer}: {one_line(self.reason)}"


_PLAIN_VALUE = re.compile(r"[A-Za-z0-9_.:@/+-]+")
_REASON_LIMIT = 1_000


def _cut_marker(length: int, limit: int) -> str:
    return f"...(+{length - limit} more characters)" if length > limit else ""


def printable(value: Any, limit: int = 60) -> str:
    """A value from a row as text for one line: as it is when plain (an id, a zone name), else
    quoted with control characters escaped (Python's repr), cut after ``limit`` characters with a
    marker saying how much is left out."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit and _PLAIN_VALUE.fullmatch(text):
        return text
    return repr(text[:limit]) + _cut_marker(len(text), limit)


def one_line(text: str, limit: int = _REASON_LIMIT) -> str:
    """Free text (a reason, an exception's message) on one line: every character that is not
    printable (newline, tab, escape, Unicode line separators) escaped, cut after ``limit``."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + _cut_marker(len(text), limit)


def first_errors(exc: ValidationError, limit: int = 3) -> str:
    """A validation error as one line: the first failing fields and why."""
    parts = []
    for error in exc.errors()[:limit]:
        # A location can hold a key of the row's own JSON (parameters, retry_config).
        location = ".".join(printable(p, limit=40) for p in error["loc"]) or "row"
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_config(row: dict[str, Any]) -> PipelineConfig | ConfigError:
    """Validate one row; a bad row becomes a ConfigError naming the field and the reason."""
    try:
        return PipelineConfig.model_validate(row)
    except ValidationError as exc:
        config, customer = row.get("config_id"), row.get("customer_id")
        return ConfigError(
            config_id=None if config is None else str(config),
            customer_id=None if customer is None else str(customer),
            reason=first_errors(exc),
        )
