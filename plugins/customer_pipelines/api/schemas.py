"""Request bodies of the API (responses are the documented dicts of service.py). Types and ranges
are checked here; the whole config (cron, timezone, template, its parameters) by models.PipelineConfig."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from customer_pipelines.models import (
    CONFIG_ID_PATTERN,
    CUSTOMER_ID_PATTERN,
    MAX_START_WINDOW_MINUTES,
    Domain,
    Plan,
    Provider,
    RetryConfig,
)

AutoBackfillTicks = Annotated[
    int | None,
    Field(ge=0, le=24, description="after missed ticks, also run up to this many of the latest (0: only the latest)"),
]
StartWindowMinutes = Annotated[
    int | None,
    Field(
        ge=0,
        le=MAX_START_WINDOW_MINUTES,
        description=(
            "runs start at the config's own stable offset within this many minutes after each tick, "
            "spreading a fleet's bursts (0 or unset: at the tick); shorter than the schedule's interval"
        ),
    ),
]


class ConfigBody(BaseModel):
    """A config as the customer sends it; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    display_name: str | None = Field(default=None, max_length=200)
    provider: Provider
    domain: Domain
    pipeline_template: str = Field(max_length=64)
    is_active: bool = True
    schedule_cron: str = Field(max_length=128, examples=["0 6 * * *", "@daily"])
    timezone: str = Field(default="UTC", max_length=64, examples=["Europe/Berlin"])
    priority: int = Field(default=5, ge=1, le=10)
    parameters: dict[str, Any] = Field(default_factory=dict)
    retry_config: RetryConfig | None = None
    max_execution_duration_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    sla_breach_threshold_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    auto_backfill_ticks: AutoBackfillTicks = None
    start_window_minutes: StartWindowMinutes = None


class ConfigCreate(ConfigBody):
    # The id's pattern here, before anything uses it: it names the config's write lock in PostgreSQL,
    # which refuses a NUL byte (found by the schemathesis run: a 500, not a 422).
    config_id: str = Field(max_length=128, pattern=CONFIG_ID_PATTERN, examples=["daily_cost"])


class ConfigPatch(BaseModel):
    """The fields to change; ``version``, if given, must be the config's current version (else 409)."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1)
    display_name: str | None = Field(default=None, max_length=200)
    provider: Provider | None = None
    domain: Domain | None = None
    pipeline_template: str | None = Field(default=None, max_length=64)
    is_active: bool | None = None
    schedule_cron: str | None = Field(default=None, max_length=128)
    timezone: str | None = Field(default=None, max_length=64)
    priority: int | None = Field(default=None, ge=1, le=10)
    parameters: dict[str, Any] | None = None
    retry_config: RetryConfig | None = None
    max_execution_duration_minutes: int | None = Field(default=None, ge=1, le=24 * 60)
    sla_breach_threshold_minutes: int | None = Field(default=None, ge=1, le=7 * 24 * 60)
    auto_backfill_ticks: AutoBackfillTicks = None
    start_window_minutes: StartWindowMinutes = None


class StateChange(BaseModel):
    """Enable or pause: ``version`` (optional) as for a patch; ``reason`` goes to the audit row."""

    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1)
    reason: str | None = Field(default=None, max_length=500)


class TriggerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    conf: dict[str, Any] = Field(default_factory=dict)


class CustomerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(max_length=63, pattern=CUSTOMER_ID_PATTERN, examples=["cust_acme"])
    company_name: str = Field(min_length=1, max_length=200)
    admin_email: str | None = Field(default=None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")
    plan: Plan
    daily_run_limit: int | None = Field(default=None, ge=0, le=1_000_000)
    monthly_run_limit: int | None = Field(default=None, ge=0, le=30_000_000)
    max_concurrent_runs: int | None = Field(default=None, ge=1, le=1_000)
    key_expires_at: datetime | None = None


class PlanChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plan: Plan
    daily_run_limit: int | None = Field(default=None, ge=0, le=1_000_000)
    monthly_run_limit: int | None = Field(default=None, ge=0, le=30_000_000)
    max_concurrent_runs: int | None = Field(default=None, ge=1, le=1_000)


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expires_at: datetime | None = None


class ConfigPreview(ConfigBody):
    config_id: str | None = Field(default=None, max_length=128)


class BackfillCreate(BaseModel):
    """A backfill of a customer's configs over the ticks of [from, to]."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    config_ids: list[str] | None = Field(
        default=None, min_length=1, max_length=500, description="unset: every config of the customer that can run now"
    )
    from_: datetime = Field(alias="from", description="first tick to consider (with a timezone)")
    to: datetime = Field(description="last tick to consider (with a timezone)")
    reprocess_behavior: str = Field(default="none", pattern="^(none|failed)$")
    dry_run: bool = Field(default=False, description="return the plan (ticks, quota outlook) and create nothing")
    count_against_quota: bool = Field(
        default=True,
        description="operators only: false exempts the backfilled runs from the customer's quota (recorded: who, when)",
    )
