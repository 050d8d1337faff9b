"""Config models: what a row of ``customer_pipeline_configs`` (and its customer) must look like to
become a DAG. Validation happens here and only here; everything downstream trusts these types."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from croniter import CroniterBadDateError, croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from customer_pipelines.templates import TEMPLATES

CUSTOMER_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
CONFIG_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$"
# Used with fullmatch, never match: Python's ``$`` also matches before a trailing newline, so
# match() accepted "cfg_1\n" as a config id.
_CUSTOMER_ID = re.compile(CUSTOMER_ID_PATTERN)
_CONFIG_ID = re.compile(CONFIG_ID_PATTERN)

# -- bounds --------------------------------------------------------------------------------------
# Every config is validated inside the one fleet DAG file, so what one row may cost must be bounded
# before anything expensive looks at it (croniter's parse costs about 7 us per character: a 1 MB
# cron took 2-3 s). Lengths are checked first (validators in mode="before"), then parsing.

MAX_LENGTHS: dict[str, int] = {
    "customer_id": 63,  # the pattern's own limit; a pool name is prefix + customer id
    "config_id": 128,  # the pattern's own limit; dag id <customer>.<config> <= 192 of Airflow's 250
    "display_name": 200,
    "company_name": 200,
    "pipeline_template": 64,
    "schedule_cron": 128,  # as written; so at most 64 list items in all
    "timezone": 64,  # the longest IANA name has 32
}
"""Most characters each string field of a config or customer row may hold."""

JSON_MAX_CHARS = 16 * 1024
"""Most characters of a JSON column (``parameters``, ``retry_config``) as JSON text. Every template's
parameters take well under 1 KiB; the bound keeps the worst row's checks below a good row's build."""
JSON_MAX_DEPTH = 10
"""Deepest nesting of a JSON column's arrays and objects (the top-level object is level 1)."""

_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.?)*+(?:"|\Z)', re.DOTALL)
"""A JSON string. Possessive, and an unterminated string runs to the end of the text, so removing
them is one linear pass whatever the text holds (no retry from each quote)."""
_NOT_BRACKETS = bytes(range(256)).translate(None, b"[]{}")
_AS_PARENS = bytes.maketrans(b"[{]}", b"(())")


def length_problem(field: str, value: Any) -> str | None:
    """Why ``value`` is too long for ``field`` (see MAX_LENGTHS), or None. Non-strings pass: the
    field's type check refuses them, at no cost that grows with their size."""
    limit = MAX_LENGTHS[field]
    if isinstance(value, str) and len(value) > limit:
        return f"too long: {len(value):,} characters (at most {limit}): {printable(value)}"
    return None


def json_text_problem(text: str) -> str | None:
    """Why a JSON column's text is too large or too deep to parse, or None. Checked before
    ``json.loads``, whose cost grows with the text and which raises RecursionError (not a
    ValueError: it would escape validation) on nesting about 1,000 deep."""
    if len(text) > JSON_MAX_CHARS:
        return f"too large: {len(text):,} characters of JSON (at most {JSON_MAX_CHARS:,})"
    # The brackets outside strings, as parentheses (whether [ closes with ] is json.loads' business):
    # each pass removes the innermost level, "()", so after JSON_MAX_DEPTH passes balanced brackets
    # are gone unless nested deeper. Every step is one C-speed pass over at most JSON_MAX_CHARS.
    brackets = _JSON_STRING.sub("", text).encode("utf-8", "surrogatepass").translate(_AS_PARENS, _NOT_BRACKETS)
    if b"(" * (JSON_MAX_DEPTH + 1) in brackets:  # the common deep case, without the passes
        return f"nested deeper than {JSON_MAX_DEPTH} levels"
    for _ in range(JSON_MAX_DEPTH):
        if not brackets:
            return None
        brackets = brackets.replace(b"()", b"")
    return f"nested deeper than {JSON_MAX_DEPTH} levels, or unbalanced brackets" if brackets else None


_FLAT_SCALARS = (int, float, bool, type(None))


def _is_small_flat_object(value: Any) -> bool:
    """An object of at most 32 numbers, booleans or nulls under short keys (a retry config, most
    parameters): within both bounds by its shape (32 x (256 + 12) characters, depth 1), so the
    walk is skipped."""
    return (
        type(value) is dict
        and len(value) <= 32
        and all(type(v) in _FLAT_SCALARS for v in value.values())
        and all(type(k) is str and len(k) <= 256 for k in value)
    )


def json_value_problem(value: Any) -> str | None:
    """The same bounds for a JSON column a client already decoded (dicts and lists): its size as
    JSON text, estimated, and its depth; walked without recursion and given up as soon as it is
    over either bound, so the walk itself costs at most about JSON_MAX_CHARS steps."""
    if _is_small_flat_object(value):
        return None
    size, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list | tuple):
            if depth > JSON_MAX_DEPTH:
                return f"nested deeper than {JSON_MAX_DEPTH} levels"
            size += 2 + len(item)  # brackets and separators; over the bound before any child is looked at
            if size <= JSON_MAX_CHARS:
                children = [*item, *item.values()] if isinstance(item, dict) else item
                stack.extend((child, depth + 1) for child in children)
        else:
            size += len(item) + 2 if isinstance(item, str) else 8
        if size > JSON_MAX_CHARS:
            return f"too large: over {JSON_MAX_CHARS:,} characters as JSON"
    return None


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


@lru_cache(maxsize=4096)
def cron_check(value: str) -> tuple[str, str | None]:
    """(the cron as stored, None) or (value, why it is refused). Cached: a fleet shares few crons,
    and croniter's checks are most of a config's validation (the value is bounded before this)."""
    value = " ".join(value.split())
    if value.startswith("@"):
        alias = CRON_ALIASES.get(value.lower())
        if alias is None:
            return value, f"not a supported cron alias: {printable(value)} (one of {', '.join(CRON_ALIASES)})"
        value = alias
    elif len(value.split(" ")) != 5 or not croniter.is_valid(value):
        return value, f"not a valid 5-field cron expression or alias: {printable(value)}"
    try:  # valid syntax can still never fire (e.g. 31 February)
        croniter(value, datetime(2000, 1, 1)).get_next(datetime)
    except CroniterBadDateError:
        return value, f"cron expression never fires: {printable(value)}"
    return value, None


MAX_START_WINDOW_MINUTES = 12 * 60
"""Longest start window a config may declare (``start_window_minutes``)."""


@lru_cache(maxsize=4096)
def shortest_cron_gap(cron: str) -> timedelta:
    """The shortest time between two consecutive ticks of a valid cron, as written (over its next
    128 ticks from a fixed date: every pattern a 5-field cron can express repeats within them or
    has longer gaps). Cached: a fleet shares few crons."""
    schedule = croniter(cron, datetime(2001, 1, 1))
    previous = schedule.get_next(datetime)
    shortest = timedelta.max
    for _ in range(127):
        current = schedule.get_next(datetime)
        shortest = min(shortest, current - previous)
        previous = current
    return shortest


def start_offset(dag_id: str, window_minutes: int) -> timedelta:
    """When, inside its start window, a config's runs start after their tick: whole seconds in
    [0, window), from a hash of the config's identity (its DAG id: customer and config). Stable
    across processes, restarts and shards (SHA-256, not Python's per-process ``hash``) and uniform
    over the window for distinct ids, like Jenkins's ``H`` cron field: 5,000 configs at
    ``0 2 * * *`` with a 30-minute window start evenly over 02:00-02:30 instead of all at 02:00."""
    if window_minutes <= 0:
        return timedelta(0)
    draw = int.from_bytes(hashlib.sha256(dag_id.encode()).digest()[:8], "big")
    return timedelta(seconds=draw * window_minutes * 60 >> 64)


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


PLAN_LIMITS: dict[str, tuple[int, int, int]] = {
    # plan: (daily runs, monthly runs, max concurrent runs): a new subscription's defaults
    "STARTER": (10, 300, 2),
    "PROFESSIONAL": (25, 750, 3),
    "SCALE": (100, 3000, 10),
    "ENTERPRISE": (500, 15000, 25),
}


class SkipReason(StrEnum):
    """Why a run did not start its pipeline (``skip_reason`` of a SKIPPED transition)."""

    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    CUSTOMER_INACTIVE = "CUSTOMER_INACTIVE"
    NO_SUBSCRIPTION = "NO_SUBSCRIPTION"
    CONFIG_INACTIVE = "CONFIG_INACTIVE"


_NOT_ZONES = ("localtime", "posixrules", "Factory")
"""Files of the zone database zoneinfo opens that are not IANA zones of their own (host-specific)."""


@lru_cache(maxsize=1024)
def is_iana_timezone(name: str) -> bool:
    """Whether ``name`` is an IANA zone: one zoneinfo can load, other than the host-specific files
    it also opens ('localtime', the leap-second 'right/' zones, the 'posix/' copies). One load per
    name and process (a fleet shares a few dozen), instead of listing the whole database
    (``available_timezones()`` reads every file of it, some 50 ms, which every parse would pay)."""
    if name.startswith(("right/", "posix/")) or name in _NOT_ZONES:
        return False
    try:
        ZoneInfo(name)  # refuses paths that are absolute or leave the database ('..'), and non-zone files
    except Exception:  # noqa: BLE001 - ValueError, OSError, zoneinfo's own: every way of not being a zone
        return False
    return True


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

    @field_validator("customer_id", "company_name", mode="before")
    @classmethod
    def _string_is_bounded(cls, value: Any, info: ValidationInfo) -> Any:
        if problem := length_problem(info.field_name or "", value):
            raise ValueError(problem)
        return value

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
    display_name: str = ""
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
    auto_backfill_ticks: int = Field(default=0, ge=0, le=24)
    """After missed ticks the scheduler also runs up to this many of the latest (fleet/timetables.py)."""
    start_window_minutes: int = Field(default=0, ge=0, le=MAX_START_WINDOW_MINUTES)
    """Runs start at the config's own offset (``start_offset``) inside this many minutes after each
    tick, to smooth a fleet's bursts; 0: at the tick. The run keeps its tick as logical date."""
    version: int = Field(default=1, ge=1)
    updated_at: datetime | None = None

    # mode="before": runs ahead of every other check of the field, so an over-long value costs a
    # len() and never reaches the pattern, croniter or the timezone lookup.
    @field_validator(
        "config_id", "customer_id", "display_name", "pipeline_template", "schedule_cron", "timezone", mode="before"
    )
    @classmethod
    def _string_is_bounded(cls, value: Any, info: ValidationInfo) -> Any:
        if problem := length_problem(info.field_name or "", value):
            raise ValueError(problem)
        return value

    @field_validator("config_id")
    @classmethod
    def _config_id_is_safe(cls, value: str) -> str:
        if not _CONFIG_ID.fullmatch(value):
            raise ValueError("must be 1-128 characters of letters, digits, '_' or '-', starting with a letter or digit")
        return value

    @field_validator("customer_id")
    @classmethod
    def _customer_id_is_safe(cls, value: str) -> str:
        if not _CUSTOMER_ID.fullmatch(value):
            raise ValueError(
                "must be 1-63 characters of lower-case letters, digits, '_' or '-', starting with a letter or digit"
            )
        return value

    @field_validator("schedule_cron")
    @classmethod
    def _cron_is_valid(cls, value: str) -> str:
        normalised, problem = cron_check(value)
        if problem:
            raise ValueError(problem)
        return normalised

    @field_validator("timezone")
    @classmethod
    def _timezone_is_iana(cls, value: str) -> str:
        if not is_iana_timezone(value):
            raise ValueError(f"unknown IANA timezone: {printable(value)}")
        return value

    @field_validator("display_name", mode="before")
    @classmethod
    def _null_display_name_is_empty(cls, value: Any) -> Any:
        return "" if value is None else value  # the column is nullable; the config is still valid

    @field_validator("auto_backfill_ticks", "start_window_minutes", mode="before")
    @classmethod
    def _null_is_off(cls, value: Any) -> Any:
        return 0 if value is None else value  # a row written before the column existed

    @field_validator("parameters", "retry_config", mode="before")
    @classmethod
    def _json_text_is_decoded(cls, value: Any) -> Any:
        # BigQuery JSON columns arrive as text (TO_JSON_STRING), from other clients decoded; either
        # way bounded in size and depth before anything parses or walks them.
        if isinstance(value, str):
            if problem := json_text_problem(value):
                raise ValueError(problem)
            value = json.loads(value) if value.strip() else None
        elif problem := json_value_problem(value):
            raise ValueError(problem)
        return {} if value is None else value

    @model_validator(mode="after")
    def _start_window_fits_schedule(self) -> PipelineConfig:
        # A tick's run starts before the next tick: with catchup off, a run not created by the next
        # tick is skipped, and the missed-run accounting judges each tick inside its own interval.
        if self.start_window_minutes:
            gap = shortest_cron_gap(self.schedule_cron)
            if timedelta(minutes=self.start_window_minutes) >= gap:
                raise ValueError(
                    f"start_window_minutes: {self.start_window_minutes} is not shorter than the schedule's "
                    f"shortest interval between ticks ({gap.total_seconds() / 60:g} minutes of {self.schedule_cron!r})"
                )
        return self

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

    @property
    def start_offset(self) -> timedelta:
        """How long after each tick its runs start (0 without a start window)."""
        return start_offset(self.dag_id, self.start_window_minutes)


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
_NAMES_ITS_FIELD = re.compile(r"[a-z_]+: ")


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
        location = ".".join(printable(p, limit=40) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if not location and _NAMES_ITS_FIELD.match(message):
            parts.append(message)  # a model validator's error, which names its field itself
        else:
            parts.append(f"{location or 'row'}: {message}")
    more = len(exc.errors()) - limit
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def parse_config(row: dict[str, Any]) -> PipelineConfig | ConfigError:
    """Validate one row; a bad row becomes a ConfigError naming the field and the reason."""
    try:
        return PipelineConfig.model_validate(row)
    except ValidationError as exc:
        reason = first_errors(exc)
    except Exception as exc:  # noqa: BLE001 - every field is bounded; still, one row never fails the file
        reason = f"row: cannot be validated: {type(exc).__name__}: {exc}"
    config, customer = row.get("config_id"), row.get("customer_id")
    return ConfigError(
        config_id=None if config is None else str(config),
        customer_id=None if customer is None else str(customer),
        reason=reason,
    )


def parse_config_json(payload: str) -> PipelineConfig | ConfigError:
    """``parse_config`` of a row held as JSON text (the snapshot's): validated straight from the
    text by pydantic's own parser, a fifth cheaper than decoding it first. A row that fails is
    validated again as decoded, so its error reads exactly as ``parse_config`` words it."""
    try:
        return PipelineConfig.model_validate_json(payload)
    except Exception:  # noqa: BLE001 - every failure is worded by parse_config below
        pass
    try:
        row = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        return ConfigError(config_id=None, customer_id=None, reason=f"row: not JSON: {exc}")
    if not isinstance(row, dict):
        return ConfigError(config_id=None, customer_id=None, reason="row: not a JSON object")
    return parse_config(row)
