"""Pipeline templates: what a config's ``pipeline_template`` names. Each declares the providers and
domain it serves, a pydantic model for its ``parameters``, and the SQL it runs. This module stays
import-light (no cloud clients): the factory imports it at parse time to validate configs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CostBillingParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    lookback_days: int = Field(default=1, ge=1, le=31)
    """Days ending at the run's logical date that are re-aggregated (late billing rows)."""


class SecurityAuditParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_severity: Literal["LOW", "MEDIUM", "HIGH", "CRITICAL"] = "LOW"


class ComplianceReportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    framework: Literal["SOC2", "ISO27001", "HIPAA", "PCI"] = "SOC2"


class ObservabilityReportParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_requests: int = Field(default=0, ge=0, le=1_000_000_000)
    """Sources (models, services) with fewer requests on the day are left out of the report."""


@dataclass(frozen=True)
class PipelineTemplate:
    name: str
    domain: str
    providers: frozenset[str]
    params_model: type[BaseModel]
    sql_file: str
    """Script under include/sql/templates/, run with @customer_id, @provider, @run_date and the
    template's parameters as query parameters; it returns one row summarising what it did."""
    description: str


_ALL_PROVIDERS = frozenset({"GCP", "AWS", "AZURE", "OPENAI", "CLAUDE"})
_CLOUDS = frozenset({"GCP", "AWS", "AZURE"})

TEMPLATES: dict[str, PipelineTemplate] = {
    t.name: t
    for t in (
        PipelineTemplate(
            name="cost_billing",
            domain="COST",
            providers=_ALL_PROVIDERS,
            params_model=CostBillingParams,
            sql_file="templates/cost_billing.sql",
            description="Aggregates the provider's billing export into daily cost per service.",
        ),
        PipelineTemplate(
            name="security_audit",
            domain="SECURITY",
            providers=_CLOUDS,
            params_model=SecurityAuditParams,
            sql_file="templates/security_audit.sql",
            description="Summarises open security findings by severity for the run's day.",
        ),
        PipelineTemplate(
            name="compliance_report",
            domain="COMPLIANCE",
            providers=_CLOUDS,
            params_model=ComplianceReportParams,
            sql_file="templates/compliance_report.sql",
            description="Scores compliance controls (passed / failed) for a framework on the run's day.",
        ),
        PipelineTemplate(
            name="observability_report",
            domain="OBSERVABILITY",
            providers=_ALL_PROVIDERS,
            params_model=ObservabilityReportParams,
            sql_file="templates/observability_report.sql",
            description=(
                "Per model (OPENAI, CLAUDE: requests, tokens, errors, latency) or monitored service "
                "(clouds: error rate, uptime) on the run's day, from the usage export."
            ),
        ),
    )
}
