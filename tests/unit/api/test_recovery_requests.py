"""Missed-runs and backfill requests refused before anything is read or written: each refusal names
the field and the reason (the paths that reach Airflow run in tests/e2e/api)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from customer_pipelines.api.auth import Caller
from customer_pipelines.api.errors import ApiError
from customer_pipelines.api.recovery import MAX_BACKFILL_RUNS, Recovery
from customer_pipelines.models import Customer
from customer_pipelines.settings import Settings
from customer_pipelines.snapshot import ConfigRow

CUSTOMER = Customer(customer_id="cust_a", status="ACTIVE", plan="STARTER", daily_run_limit=5, max_concurrent_runs=2)


def _config_row(config_id: str, cron: str, **fields: Any) -> ConfigRow:
    row = {
        "config_id": config_id,
        "customer_id": "cust_a",
        "provider": "GCP",
        "domain": "COST",
        "pipeline_template": "cost_billing",
        "schedule_cron": cron,
        "timezone": "UTC",
        **fields,
    }
    return ConfigRow(config_id, f"cust_a.{config_id}", 0, json.dumps(row))


class StandIn:
    """The services the refusals may touch: the customer and its configs in the snapshot."""

    def __init__(self) -> None:
        self.settings = Settings()
        rows = [_config_row("every_minute", "* * * * *"), _config_row("paused", "0 2 * * *", is_active=False)]
        self.snapshots = SimpleNamespace(get=lambda: SimpleNamespace(configs_of_customer=lambda customer_id: rows))

    def customer(self, customer_id: str) -> Customer:
        if customer_id != "cust_a":
            raise ApiError(404, f"customer {customer_id} not found")
        return CUSTOMER


OPERATOR = Caller(name="ops", user=object())
CUSTOMER_KEY = Caller(name="cust_a", key_id="0" * 16, customer_id="cust_a")
NOW = datetime.now(UTC)


def _refusal(call: Any) -> ApiError:
    with pytest.raises(ApiError) as refused:
        call()
    return refused.value


def _backfill(caller: Caller, **body: Any) -> Any:
    request = {"config_ids": None, "from_": NOW - timedelta(hours=2), "to": NOW - timedelta(hours=1), **body}
    return lambda: Recovery(StandIn()).backfill(caller, "cust_a", request)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"from_": datetime(2026, 12, 1, 2)}, "from"),  # no timezone
        ({"from_": NOW + timedelta(hours=1), "to": NOW + timedelta(hours=2)}, "from"),  # the future
        ({"from_": NOW - timedelta(hours=1), "to": NOW - timedelta(hours=2)}, "from"),  # after 'to'
        ({"from_": NOW - timedelta(days=5 * 366 + 1)}, "from"),  # too far back
        ({"reprocess_behavior": "completed"}, "reprocess_behavior"),
        ({"config_ids": ["every_minute"], "from_": NOW - timedelta(days=1)}, "to"),  # 1,440 ticks
    ],
)
def test_a_backfill_request_that_cannot_be_backfilled_is_refused_naming_the_field(body, field):
    refused = _refusal(_backfill(OPERATOR, **body))
    assert refused.status == 422 and refused.errors[0]["field"] == field


def test_more_ticks_than_a_request_may_cover_is_refused_and_the_limit_is_named():
    refused = _refusal(_backfill(OPERATOR, config_ids=["every_minute"], from_=NOW - timedelta(days=1)))
    assert str(MAX_BACKFILL_RUNS) in refused.errors[0]["reason"]


def test_only_an_operator_may_exempt_a_backfill_from_the_quota():
    refused = _refusal(_backfill(CUSTOMER_KEY, count_against_quota=False))
    assert refused.status == 403 and "count_against_quota" in refused.detail


def test_a_paused_config_is_refused_with_its_reason_and_an_unknown_one_is_not_found():
    paused = _refusal(_backfill(OPERATOR, config_ids=["paused"]))
    assert paused.status == 409 and "CONFIG_INACTIVE" in paused.detail
    assert _refusal(_backfill(OPERATOR, config_ids=["nope"])).status == 404


@pytest.mark.parametrize(
    ("since", "until", "field"),
    [
        (datetime(2026, 12, 1), None, "since"),  # no timezone
        (NOW, NOW - timedelta(hours=1), "since"),  # not before until
        (NOW - timedelta(days=32), NOW, "since"),  # over 31 days
        (None, datetime(1, 1, 1, tzinfo=UTC), "until"),  # before 2000 (and no underflow)
    ],
)
def test_a_tick_window_is_refused_naming_the_field(since, until, field):
    refused = _refusal(lambda: Recovery(StandIn()).ticks("cust_a", "every_minute", since, until))
    assert refused.status == 422 and refused.errors[0]["field"] == field
