"""Demo data (the seeds' two customers and four pipelines, plus the billing, security, compliance and
observability data the templates work on) and a synthetic fleet generator for tests and benchmarks."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from customer_pipelines.bigquery.store import BigQueryStore
from customer_pipelines.models import PLAN_LIMITS


@dataclass
class Dataset:
    customers: list[dict[str, Any]] = field(default_factory=list)
    subscriptions: list[dict[str, Any]] = field(default_factory=list)
    configs: list[dict[str, Any]] = field(default_factory=list)
    billing: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    controls: list[dict[str, Any]] = field(default_factory=list)
    usage: list[dict[str, Any]] = field(default_factory=list)
    """observability_usage: per model (OPENAI, CLAUDE) or monitored service (clouds) and day."""


def customer_rows(
    customer_id: str, company: str, plan: str, *, status: str = "ACTIVE", now: datetime
) -> tuple[dict, dict]:
    daily, monthly, concurrent = PLAN_LIMITS[plan]
    customer = {
        "customer_id": customer_id,
        "company_name": company,
        "admin_email": f"admin@{customer_id.replace('_', '-')}.example.com",
        "status": status,
        "created_at": now,
        "updated_at": now,
    }
    subscription = {
        "subscription_id": f"sub_{customer_id}",
        "customer_id": customer_id,
        "plan": plan,
        "daily_run_limit": daily,
        "monthly_run_limit": monthly,
        "max_concurrent_runs": concurrent,
        "valid_from": now - timedelta(days=365),
        "valid_until": None,
        "created_at": now,
        "updated_at": now,
    }
    return customer, subscription


def config_row(
    config_id: str,
    customer_id: str,
    name: str,
    provider: str,
    domain: str,
    template: str,
    cron: str,
    timezone: str,
    *,
    priority: int = 5,
    is_active: bool = True,
    parameters: dict[str, Any] | None = None,
    now: datetime,
) -> dict[str, Any]:
    return {
        "config_id": config_id,
        "customer_id": customer_id,
        "display_name": name,
        "provider": provider,
        "domain": domain,
        "pipeline_template": template,
        "is_active": is_active,
        "schedule_cron": cron,
        "timezone": timezone,
        "priority": priority,
        "parameters": parameters or {},
        "retry_config": {"max_attempts": 3, "base_delay_minutes": 5, "backoff_multiplier": 2},
        "max_execution_duration_minutes": 60,
        "sla_breach_threshold_minutes": 30,
        "version": 1,
        "deleted_at": None,
        "created_at": now,
        "updated_at": now,
        "created_by": "seed",
        "updated_by": "seed",
    }


def demo_dataset(today: date | None = None) -> Dataset:
    now = datetime.now(UTC)
    today = today or now.date()
    data = Dataset()
    for customer_id, company, plan in (
        ("cust_acme_001", "Acme Test Corp", "PROFESSIONAL"),
        ("cust_globex_001", "Globex Test Inc", "SCALE"),
    ):
        customer, subscription = customer_rows(customer_id, company, plan, now=now)
        data.customers.append(customer)
        data.subscriptions.append(subscription)
    data.configs = [
        config_row(
            "acme_gcp_cost_daily",
            "cust_acme_001",
            "Daily GCP Cost Analysis",
            "GCP",
            "COST",
            "cost_billing",
            "0 2 * * *",
            "UTC",
            priority=7,
            now=now,
        ),
        config_row(
            "acme_gcp_security_weekly",
            "cust_acme_001",
            "Weekly Security Audit",
            "GCP",
            "SECURITY",
            "security_audit",
            "0 0 * * 1",
            "America/New_York",
            priority=5,
            parameters={"min_severity": "MEDIUM"},
            now=now,
        ),
        config_row(
            "globex_aws_cost_daily",
            "cust_globex_001",
            "Daily AWS Cost",
            "AWS",
            "COST",
            "cost_billing",
            "0 3 * * *",
            "America/New_York",
            priority=6,
            now=now,
        ),
        config_row(
            "globex_azure_compliance_monthly",
            "cust_globex_001",
            "Monthly Compliance",
            "AZURE",
            "COMPLIANCE",
            "compliance_report",
            "0 0 1 * *",
            "UTC",
            priority=4,
            parameters={"framework": "SOC2"},
            now=now,
        ),
    ]
    rng = random.Random(20251117)
    services = {
        "GCP": ["BigQuery", "Compute Engine", "Cloud Storage"],
        "AWS": ["EC2", "S3", "RDS"],
        "AZURE": ["VMs", "Blob"],
    }
    for offset in range(-45, 2):
        day = today + timedelta(days=offset)
        for customer_id, provider in (
            ("cust_acme_001", "GCP"),
            ("cust_globex_001", "AWS"),
            ("cust_globex_001", "AZURE"),
        ):
            for service in services[provider]:
                for sku in range(2):
                    data.billing.append(
                        {
                            "customer_id": customer_id,
                            "provider": provider,
                            "usage_date": day,
                            "service": service,
                            "sku": f"{service.lower().replace(' ', '-')}-{sku}",
                            "cost": Decimal(f"{rng.uniform(5, 400):.2f}"),
                            "currency": "USD",
                        }
                    )
            for control in range(12):
                data.controls.append(
                    {
                        "customer_id": customer_id,
                        "provider": provider,
                        "framework": "SOC2",
                        "control_id": f"CC{control + 1}",
                        "check_date": day,
                        "passed": rng.random() > 0.2,
                    }
                )
    for n in range(40):
        detected = today - timedelta(days=rng.randint(0, 60))
        resolved = detected + timedelta(days=rng.randint(1, 20)) if rng.random() < 0.5 else None
        data.findings.append(
            {
                "customer_id": "cust_acme_001",
                "provider": "GCP",
                "finding_id": f"F{n:04d}",
                "severity": rng.choice(["LOW", "MEDIUM", "HIGH", "CRITICAL"]),
                "resource": f"projects/acme/r{n}",
                "detected_date": detected,
                "resolved_date": resolved,
            }
        )
    data.usage = _observability_usage(today)
    return data


def _observability_usage(today: date) -> list[dict[str, Any]]:
    """What the observability template reads: the models' usage export (requests, tokens, errors,
    latency) and the clouds' monitored services (requests, errors, availability probes). Its own
    random stream, so the other demo rows stay as they were."""
    rng = random.Random(20261204)
    sources = {
        ("cust_acme_001", "OPENAI"): ["gpt-4o", "gpt-4o-mini"],
        ("cust_globex_001", "CLAUDE"): ["claude-sonnet-4", "claude-haiku-3-5"],
        ("cust_acme_001", "GCP"): ["BigQuery", "Cloud Run"],
        ("cust_globex_001", "AWS"): ["EC2", "RDS"],
    }
    rows = []
    for offset in range(-45, 2):
        day = today + timedelta(days=offset)
        for (customer_id, provider), names in sources.items():
            model = provider in ("OPENAI", "CLAUDE")
            for name in names:
                requests = rng.randint(200, 5000)
                probes = None if model else 288  # a probe every 5 minutes
                rows.append(
                    {
                        "customer_id": customer_id,
                        "provider": provider,
                        "usage_date": day,
                        "source": name,
                        "requests": requests,
                        "errors": int(requests * rng.uniform(0, 0.05)),
                        "input_tokens": requests * rng.randint(200, 2000) if model else None,
                        "output_tokens": requests * rng.randint(50, 800) if model else None,
                        "latency_ms_total": requests * rng.uniform(80, 2500),
                        "probes": probes,
                        "probes_up": None if probes is None else probes - rng.choice([0, 0, 0, 1, 3]),
                    }
                )
    return rows


_CRONS = [
    # (cron, weight): a large share fires at 02:00, the burst the scheduler must absorb
    ("0 2 * * *", 30),
    ("0 3 * * *", 10),
    ("30 1 * * *", 5),
    ("0 * * * *", 10),
    ("*/30 * * * *", 3),
    ("0 0 * * 1", 10),
    ("15 6 * * 1-5", 8),
    ("0 0 1 * *", 8),
    ("0 12 * * *", 8),
    ("45 23 * * *", 8),
]
_TIMEZONES = [
    "UTC",
    "UTC",
    "UTC",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Tokyo",
    "America/Los_Angeles",
    "Australia/Sydney",
    "Asia/Kolkata",
]
_KINDS = [
    ("GCP", "COST", "cost_billing"),
    ("AWS", "COST", "cost_billing"),
    ("AZURE", "COST", "cost_billing"),
    ("OPENAI", "COST", "cost_billing"),
    ("CLAUDE", "COST", "cost_billing"),
    ("GCP", "SECURITY", "security_audit"),
    ("AWS", "SECURITY", "security_audit"),
    ("AZURE", "COMPLIANCE", "compliance_report"),
    ("AWS", "COMPLIANCE", "compliance_report"),
]


def fleet_dataset(customers: int, *, seed: int = 7, configs_per_customer: tuple[int, int] = (2, 8)) -> Dataset:
    """A synthetic fleet: plans, statuses, crons, timezones and priorities in a realistic mix
    (about 5 configs per customer, ~7% inactive customers, ~10% paused configs)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    data = Dataset()
    crons, weights = zip(*_CRONS, strict=True)
    for i in range(1, customers + 1):
        customer_id = f"fleet_{i:06d}"
        plan = rng.choices(list(PLAN_LIMITS), weights=[30, 40, 25, 5])[0]
        status = rng.choices(["ACTIVE", "SUSPENDED", "CHURNED"], weights=[93, 5, 2])[0]
        customer, subscription = customer_rows(customer_id, f"Fleet Customer {i}", plan, status=status, now=now)
        data.customers.append(customer)
        data.subscriptions.append(subscription)
        for j in range(rng.randint(*configs_per_customer)):
            provider, domain, template = rng.choice(_KINDS)
            data.configs.append(
                config_row(
                    f"{customer_id}_{template}_{j}",
                    customer_id,
                    f"{provider} {domain.lower()} #{j}",
                    provider,
                    domain,
                    template,
                    rng.choices(crons, weights=weights)[0],
                    rng.choice(_TIMEZONES),
                    priority=rng.randint(1, 10),
                    is_active=rng.random() > 0.1,
                    now=now,
                )
            )
    return data


def load_dataset(store: BigQueryStore, data: Dataset, *, replace: bool = True) -> dict[str, int]:
    """Write a dataset with load jobs: customers and configs to the control plane, the billing,
    security, compliance and observability rows to the data plane (``store`` may be either plane's). Customers and
    configs are written as their version 1 (their tables are append-only version logs). With
    ``replace`` its customers' earlier rows (every version) go first, so seeding twice gives the
    same tables."""
    control, data_plane = store.for_plane("control"), store.for_plane("data")
    if replace and data.customers:
        customer_ids = {"customer_ids": [c["customer_id"] for c in data.customers]}
        control.query("queries/delete_customers.sql", customer_ids)
        data_plane.query("queries/delete_customer_data.sql", customer_ids)
    counts = {
        "customers": control.load_rows("customers", data.customers),
        "customer_subscriptions": control.load_rows("customer_subscriptions", data.subscriptions),
        "customer_pipeline_configs": control.load_rows("customer_pipeline_configs", data.configs),
        "billing_export": data_plane.load_rows("billing_export", data.billing),
        "security_findings": data_plane.load_rows("security_findings", data.findings),
        "compliance_controls": data_plane.load_rows("compliance_controls", data.controls),
        "observability_usage": data_plane.load_rows("observability_usage", data.usage),
    }
    return counts


def snapshot_customer_rows(dataset: Any) -> list[dict[str, Any]]:
    """Customers as queries/snapshot_customers.sql returns them: the customer row LEFT JOINed with
    the plan and limits of its subscription in force (views/005_customer_subscriptions_current.sql:
    the latest whose window holds now), all NULL for a customer without one."""
    now = datetime.now(UTC)
    in_force = sorted(
        (
            s
            for s in dataset.subscriptions
            if s["valid_from"] <= now and (s["valid_until"] is None or s["valid_until"] > now)
        ),
        key=lambda s: s["valid_from"],
    )
    subscriptions = {s["customer_id"]: s for s in in_force}  # the latest wins
    rows = []
    for customer in dataset.customers:
        sub = subscriptions.get(customer["customer_id"], {})
        rows.append(
            {
                "customer_id": customer["customer_id"],
                "company_name": customer["company_name"],
                "status": customer["status"],
                "plan": sub.get("plan"),
                "daily_run_limit": sub.get("daily_run_limit"),
                "monthly_run_limit": sub.get("monthly_run_limit"),
                "max_concurrent_runs": sub.get("max_concurrent_runs"),
            }
        )
    return rows
