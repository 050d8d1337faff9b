"""Runs (from the run-state mirror in BigQuery) and usage against the quota."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from customer_pipelines.api.auth import Caller, customer_access
from customer_pipelines.api.routes.configs import ConfigId, CustomerId, services

router = APIRouter(prefix="/customers/{customer_id}", tags=["runs"])
Access = Annotated[Caller, Depends(customer_access)]
RUN_STATES = ("SCHEDULED", "QUEUED", "RUNNING", "RETRYING", "COMPLETED", "FAILED", "SKIPPED", "TIMEOUT", "CANCELLED")
State = Annotated[str | None, Query(pattern="^(" + "|".join(RUN_STATES) + ")$")]
Cursor = Annotated[str | None, Query(max_length=300)]
Limit = Annotated[int, Query(ge=1, le=500)]


@router.get("/runs", summary="A customer's runs, newest first (state, time range; cursor pagination)")
def customer_runs(
    request: Request,
    customer_id: CustomerId,
    caller: Access,
    state: State = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    return services(request).runs(
        customer_id, config_id=None, state=state, since=since, until=until, cursor=cursor, limit=limit
    )


@router.get("/configs/{config_id}/runs", summary="A config's runs, newest first")
def config_runs(
    request: Request,
    customer_id: CustomerId,
    config_id: ConfigId,
    caller: Access,
    state: State = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Cursor = None,
    limit: Limit = 100,
) -> dict[str, Any]:
    return services(request).runs(
        customer_id, config_id=config_id, state=state, since=since, until=until, cursor=cursor, limit=limit
    )


@router.get("/usage", summary="Usage against the quota: today, this month, concurrency")
def usage(request: Request, customer_id: CustomerId, caller: Access) -> dict[str, Any]:
    return services(request).usage(customer_id)
