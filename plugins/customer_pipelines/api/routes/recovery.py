"""Missed runs (every tick accounted for) and backfills of a customer's configs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from customer_pipelines.api.auth import Caller, customer_access
from customer_pipelines.api.routes.configs import ConfigId, CustomerId, services
from customer_pipelines.api.schemas import BackfillCreate

router = APIRouter(prefix="/customers/{customer_id}", tags=["missed runs and backfills"])
Access = Annotated[Caller, Depends(customer_access)]
BackfillId = Annotated[int, Path(ge=1, le=2**31 - 1)]


@router.get(
    "/configs/{config_id}/ticks",
    summary="Every tick of a config in a window (default: the last day): ran, skipped, late or missed, and why",
)
def config_ticks(
    request: Request,
    customer_id: CustomerId,
    config_id: ConfigId,
    caller: Access,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    return services(request).recovery.ticks(customer_id, config_id, since, until)


@router.get("/missed-runs", summary="A customer's ticks without a successful run, per config, with their causes")
def missed_runs(
    request: Request,
    customer_id: CustomerId,
    caller: Access,
    since: datetime | None = None,
    until: datetime | None = None,
) -> dict[str, Any]:
    return services(request).recovery.missed(customer_id, since, until)


@router.post(
    "/backfills",
    status_code=201,
    summary="Backfill ticks of a window with Airflow's backfill (dry_run: the plan and the quota outlook only)",
)
def create_backfill(request: Request, customer_id: CustomerId, body: BackfillCreate, caller: Access) -> dict[str, Any]:
    return services(request).recovery.backfill(caller, customer_id, body.model_dump())


@router.get("/backfills/{backfill_id}", summary="A backfill: its window and its runs by state")
def backfill_status(
    request: Request, customer_id: CustomerId, backfill_id: BackfillId, caller: Access
) -> dict[str, Any]:
    return services(request).recovery.backfill_status(customer_id, backfill_id)


@router.post("/backfills/{backfill_id}/cancel", summary="Cancel a backfill: none of its runs stays queued or running")
def cancel_backfill(
    request: Request, customer_id: CustomerId, backfill_id: BackfillId, caller: Access
) -> dict[str, Any]:
    return services(request).recovery.cancel(caller, customer_id, backfill_id)
