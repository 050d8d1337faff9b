"""seed.py: the demo dataset and the synthetic fleet generator."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from customer_pipelines import seed
from customer_pipelines.models import ConfigError, Customer, PipelineConfig, parse_config

WALL_CLOCK_FIELDS = {"created_at", "updated_at", "valid_from"}
"""Stamped with datetime.now(): the only fields a seed does not determine."""


def _without_clock(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in row.items() if k not in WALL_CLOCK_FIELDS} for row in rows]


@pytest.fixture(scope="module")
def fleet() -> seed.Dataset:
    return seed.fleet_dataset(50, seed=1)


def test_fleet_is_deterministic_for_a_seed(fleet):
    again = seed.fleet_dataset(50, seed=1)
    assert _without_clock(again.customers) == _without_clock(fleet.customers)
    assert _without_clock(again.subscriptions) == _without_clock(fleet.subscriptions)
    assert _without_clock(again.configs) == _without_clock(fleet.configs)


def test_another_seed_gives_another_fleet(fleet):
    other = seed.fleet_dataset(50, seed=2)
    assert _without_clock(other.configs) != _without_clock(fleet.configs)


def test_every_generated_config_validates(fleet):
    parsed = [parse_config(row) for row in fleet.configs]
    errors = [p for p in parsed if isinstance(p, ConfigError)]
    assert errors == []
    assert all(isinstance(p, PipelineConfig) for p in parsed)


def test_generated_ids_are_unique_and_every_config_has_its_customer(fleet):
    customer_ids = [c["customer_id"] for c in fleet.customers]
    config_ids = [c["config_id"] for c in fleet.configs]
    assert len(customer_ids) == 50
    assert len(set(customer_ids)) == len(customer_ids)
    assert len(set(config_ids)) == len(config_ids)
    assert {c["customer_id"] for c in fleet.configs} <= set(customer_ids)
    assert len({(c["customer_id"], c["config_id"]) for c in fleet.configs}) == len(config_ids)


def test_configs_per_customer_stay_within_the_requested_range(fleet):
    per_customer = Counter(c["customer_id"] for c in fleet.configs)
    assert all(2 <= n <= 8 for n in per_customer.values())
    small = seed.fleet_dataset(10, seed=1, configs_per_customer=(1, 1))
    assert len(small.configs) == 10


def test_a_large_share_of_the_fleet_fires_at_two_oclock(fleet):
    crons = Counter(c["schedule_cron"] for c in fleet.configs)
    assert crons.most_common(1)[0][0] == "0 2 * * *"
    assert crons["0 2 * * *"] / len(fleet.configs) >= 0.2


def test_generated_customers_and_subscriptions_are_valid_and_match_their_plan(fleet):
    by_customer = {s["customer_id"]: s for s in fleet.subscriptions}
    for row in fleet.customers:
        sub = by_customer[row["customer_id"]]
        customer = Customer.model_validate({**row, **sub})
        daily, monthly, concurrent = seed.PLAN_LIMITS[sub["plan"]]
        assert (customer.daily_run_limit, customer.monthly_run_limit, customer.max_concurrent_runs) == (
            daily,
            monthly,
            concurrent,
        )
    assert {c["status"] for c in fleet.customers} <= {"ACTIVE", "SUSPENDED", "CHURNED"}


def test_demo_dataset_has_the_two_customers_four_configs_and_their_data():
    data = seed.demo_dataset()
    assert [c["customer_id"] for c in data.customers] == ["cust_acme_001", "cust_globex_001"]
    assert [s["plan"] for s in data.subscriptions] == ["PROFESSIONAL", "SCALE"]
    assert all(isinstance(parse_config(row), PipelineConfig) for row in data.configs)
    assert len(data.configs) == 4
    assert data.billing and data.findings and data.controls and data.usage
    assert {(b["customer_id"], b["provider"]) for b in data.billing} == {
        ("cust_acme_001", "GCP"),
        ("cust_globex_001", "AWS"),
        ("cust_globex_001", "AZURE"),
    }


def test_demo_observability_usage_has_models_with_tokens_and_services_with_probes():
    usage = seed.demo_dataset().usage
    models = [u for u in usage if u["provider"] in ("OPENAI", "CLAUDE")]
    services = [u for u in usage if u["provider"] in ("GCP", "AWS", "AZURE")]
    assert models and services
    assert all(u["input_tokens"] and u["output_tokens"] and u["probes"] is None for u in models)
    assert all(u["input_tokens"] is None and 0 <= u["probes_up"] <= u["probes"] for u in services)
    assert all(0 <= u["errors"] <= u["requests"] for u in usage)
