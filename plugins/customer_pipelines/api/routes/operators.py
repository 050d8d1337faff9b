"""The platform operators' routes: fleet status, customers (onboard, plan, suspend, reactivate)
and their API keys. Airflow users only."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from customer_pipelines.api.auth import Caller, operator_access
from customer_pipelines.api.idempotency import once
from customer_pipelines.api.routes.configs import CustomerId, services
from customer_pipelines.api.schemas import CustomerCreate, KeyCreate, PlanChange

router = APIRouter(tags=["operators"])
Operator = Annotated[Caller, Depends(operator_access)]
KeyId = Annotated[str, Path(pattern="^[0-9a-f]{16}$")]


@router.get("/fleet/status", summary="Due soon, running, failed today, mirror lag")
def fleet_status(request: Request, caller: Operator) -> dict[str, Any]:
    return services(request).fleet_status()


@router.get("/fleet/overview", summary="The fleet page's figures: runs per hour ahead, success by day, mirror, alerts")
def fleet_overview(request: Request, caller: Operator) -> dict[str, Any]:
    return services(request).overview.fleet()


@router.get("/fleet/customers", summary="Customers with quota use, concurrency, failing and paused configs, SLA")
def fleet_customers(
    request: Request,
    caller: Operator,
    q: Annotated[str, Query(max_length=200, description="part of a customer id or company name")] = "",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    return services(request).overview.customers(q, offset, limit)


@router.get("/fleet/missed-runs", summary="Per customer: runnable configs' ticks without a run in a window, by cause")
def fleet_missed_runs(
    request: Request, caller: Operator, since: datetime | None = None, until: datetime | None = None
) -> dict[str, Any]:
    return services(request).recovery.fleet_missed(since, until)


@router.post("/customers", status_code=201, summary="Onboard a customer: customer, subscription, first API key")
def onboard(request: Request, body: CustomerCreate, caller: Operator) -> Any:
    data = body.model_dump(mode="json")
    return once(request, caller, data, 201, lambda: services(request).onboard(caller, body.model_dump()))


@router.get("/customers/{customer_id}", summary="A customer: status, plan, limits, API keys")
def get_customer(request: Request, customer_id: CustomerId, caller: Operator) -> dict[str, Any]:
    return services(request).customer_view(customer_id)


@router.put("/customers/{customer_id}/plan", summary="Change a customer's plan (a new subscription from now)")
def change_plan(request: Request, customer_id: CustomerId, body: PlanChange, caller: Operator) -> dict[str, Any]:
    return services(request).change_plan(caller, customer_id, body.model_dump(mode="json"))


@router.post("/customers/{customer_id}/suspend", summary="Suspend a customer: nothing of theirs starts")
def suspend(request: Request, customer_id: CustomerId, caller: Operator) -> dict[str, Any]:
    return services(request).set_status(caller, customer_id, "SUSPENDED")


@router.post("/customers/{customer_id}/reactivate", summary="Reactivate a suspended customer")
def reactivate(request: Request, customer_id: CustomerId, caller: Operator) -> dict[str, Any]:
    return services(request).set_status(caller, customer_id, "ACTIVE")


@router.post("/customers/{customer_id}/api-keys", status_code=201, summary="Issue an API key (shown once)")
def issue_key(request: Request, customer_id: CustomerId, caller: Operator, body: KeyCreate | None = None) -> Any:
    expires = (body or KeyCreate()).expires_at
    return once(
        request,
        caller,
        {"expires_at": expires},
        201,
        lambda: services(request).issue_key(caller, customer_id, expires),
    )


@router.post(
    "/customers/{customer_id}/api-keys/{key_id}/rotate", status_code=201, summary="A new key; the old one revoked"
)
def rotate_key(
    request: Request, customer_id: CustomerId, key_id: KeyId, caller: Operator, body: KeyCreate | None = None
) -> Any:
    return services(request).rotate_key(caller, customer_id, key_id, (body or KeyCreate()).expires_at)


@router.delete("/customers/{customer_id}/api-keys/{key_id}", summary="Revoke an API key")
def revoke_key(request: Request, customer_id: CustomerId, key_id: KeyId, caller: Operator) -> dict[str, Any]:
    return services(request).revoke_key(caller, customer_id, key_id)
