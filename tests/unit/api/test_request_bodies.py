"""Request bodies refuse an id the rest of the system cannot hold, before anything uses it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from customer_pipelines.api.schemas import ConfigCreate, CustomerCreate

CONFIG = {
    "config_id": "daily_cost",
    "provider": "GCP",
    "domain": "COST",
    "pipeline_template": "cost_billing",
    "schedule_cron": "0 6 * * *",
}
CUSTOMER = {"customer_id": "cust_acme", "company_name": "Acme", "plan": "STARTER"}


@pytest.mark.parametrize(
    ("model", "body", "field", "value"),
    [
        # a NUL byte: PostgreSQL (the write lock's key) refuses it; the API answered 500 before
        (ConfigCreate, CONFIG, "config_id", "daily\x00cost"),
        (ConfigCreate, CONFIG, "config_id", "daily cost"),
        (ConfigCreate, CONFIG, "config_id", "_daily"),
        (CustomerCreate, CUSTOMER, "customer_id", "cust\x00acme"),
        (CustomerCreate, CUSTOMER, "customer_id", "Cust_Acme"),
    ],
)
def test_a_body_with_an_id_outside_its_pattern_is_refused_naming_the_field(
    model: type[BaseModel], body: dict[str, Any], field: str, value: str
) -> None:
    assert model.model_validate(body)  # the twin: the same body with a good id is taken
    with pytest.raises(ValidationError) as refused:
        model.model_validate({**body, field: value})
    assert [error["loc"] for error in refused.value.errors()] == [(field,)]
    assert "pattern" in refused.value.errors()[0]["msg"]
