"""A customer's configs: list, get, create, update, delete, enable, pause, pause or resume all,
preview, and trigger a run now."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from customer_pipelines.api.auth import Caller, customer_access
from customer_pipelines.api.idempotency import once
from customer_pipelines.api.schemas import ConfigCreate, ConfigPatch, ConfigPreview, StateChange, TriggerBody
from customer_pipelines.models import CONFIG_ID_PATTERN, CUSTOMER_ID_PATTERN, Domain, Provider

router = APIRouter(prefix="/customers/{customer_id}", tags=["configs"])

CustomerId = Annotated[str, Path(pattern=CUSTOMER_ID_PATTERN, max_length=63)]
ConfigId = Annotated[str, Path(pattern=CONFIG_ID_PATTERN, max_length=128)]
Access = Annotated[Caller, Depends(customer_access)]
IfMatch = Annotated[
    str | None, Header(max_length=40, description="the config's version, as an alternative to `version`")
]


def services(request: Request) -> Any:
    return request.app.state.services


def expected_version(body_version: int | None, if_match: str | None) -> int | None:
    """The version the caller read: the body's ``version`` or an ``If-Match`` header (W/"3" or 3)."""
    if body_version is not None:
        return body_version
    if if_match:
        text = if_match.strip().removeprefix("W/").strip('"')
        if text.isdigit():
            return int(text)
    return None


async def cached_read(request: Request, key: tuple[Any, ...], read: Callable[[], dict[str, Any]]) -> Response:
    """A read answered from the snapshot generation's cache when it was answered already (a stat and a
    dict lookup, on the event loop: cheaper than a worker thread's round trip), else read in a worker
    thread (SQLite; a new generation's file is opened and checked) and cached. Reached only after the
    route's access check, and the key starts with the customer: an answer never crosses customers."""
    body = services(request).cached_answer(key)
    if body is None:
        body = await run_in_threadpool(services(request).answer, key, read)
    return Response(body, media_type="application/json")


@router.get("/configs", summary="List a customer's configs (cursor pagination)", response_model=dict[str, Any])
async def list_configs(
    request: Request,
    customer_id: CustomerId,
    caller: Access,
    provider: Provider | None = None,
    domain: Domain | None = None,
    active: bool | None = None,
    cursor: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Response:
    filters = {
        "provider": provider.value if provider else None,
        "domain": domain.value if domain else None,
        "active": active,
        "cursor": cursor,
        "limit": limit,
    }
    return await cached_read(
        request,
        (customer_id, "configs", *filters.values()),
        lambda: services(request).list_configs(customer_id, **filters),
    )


@router.post("/configs", status_code=201, summary="Create a config (Idempotency-Key supported)")
def create_config(request: Request, customer_id: CustomerId, body: ConfigCreate, caller: Access) -> Any:
    data = body.model_dump(mode="json", exclude_none=True)
    return once(request, caller, data, 201, lambda: services(request).create_config(caller, customer_id, data).body())


@router.post("/config-previews", summary="Validate a config without saving it; its next 10 fire times")
def preview_config(request: Request, customer_id: CustomerId, body: ConfigPreview, caller: Access) -> dict[str, Any]:
    return services(request).preview(customer_id, body.model_dump(mode="json", exclude_none=True))


@router.get("/configs/{config_id}", summary="Get one config", response_model=dict[str, Any])
async def get_config(request: Request, customer_id: CustomerId, config_id: ConfigId, caller: Access) -> Response:
    return await cached_read(
        request, (customer_id, "config", config_id), lambda: services(request).get_config(customer_id, config_id)
    )


@router.patch("/configs/{config_id}", summary="Change fields of a config (optimistic concurrency on version)")
def update_config(
    request: Request,
    customer_id: CustomerId,
    config_id: ConfigId,
    body: ConfigPatch,
    caller: Access,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    changes = body.model_dump(mode="json", exclude_unset=True)
    version = changes.pop("version", None)
    return (
        services(request)
        .update_config(caller, customer_id, config_id, changes, expected_version(version, if_match))
        .body()
    )


@router.delete("/configs/{config_id}", summary="Delete a config (soft delete: its history stays)")
def delete_config(
    request: Request,
    customer_id: CustomerId,
    config_id: ConfigId,
    caller: Access,
    version: Annotated[int | None, Query(ge=1)] = None,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    return services(request).delete_config(caller, customer_id, config_id, expected_version(version, if_match)).body()


def _set_active(
    request: Request,
    caller: Caller,
    customer_id: str,
    config_id: str,
    active: bool,
    body: StateChange | None,
    if_match: str | None,
) -> dict[str, Any]:
    body = body or StateChange()
    expected = expected_version(body.version, if_match)
    return services(request).set_active(caller, customer_id, config_id, active, expected, body.reason).body()


@router.post("/configs/{config_id}/enable", summary="Enable a config: runs from its next tick on")
def enable_config(
    request: Request,
    customer_id: CustomerId,
    config_id: ConfigId,
    caller: Access,
    body: StateChange | None = None,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    return _set_active(request, caller, customer_id, config_id, True, body, if_match)


@router.post("/configs/{config_id}/pause", summary="Pause a config: no new runs; a run in flight finishes")
def pause_config(
    request: Request,
    customer_id: CustomerId,
    config_id: ConfigId,
    caller: Access,
    body: StateChange | None = None,
    if_match: IfMatch = None,
) -> dict[str, Any]:
    return _set_active(request, caller, customer_id, config_id, False, body, if_match)


@router.post("/pause-all", summary="Pause every config of the customer")
def pause_all(request: Request, customer_id: CustomerId, caller: Access) -> dict[str, Any]:
    return services(request).set_all_active(caller, customer_id, False)


@router.post("/resume-all", summary="Enable every config of the customer")
def resume_all(request: Request, customer_id: CustomerId, caller: Access) -> dict[str, Any]:
    return services(request).set_all_active(caller, customer_id, True)


@router.post(
    "/configs/{config_id}/runs",
    status_code=201,
    summary="Run a config now (refused with 429 and the limit hit when the quota is used up)",
)
def trigger_run(
    request: Request,
    customer_id: CustomerId,
    config_id: ConfigId,
    caller: Access,
    body: TriggerBody | None = None,
) -> Any:
    conf = (body or TriggerBody()).conf
    return once(
        request,
        caller,
        {"config_id": config_id, "conf": conf},
        201,
        lambda: services(request).trigger(caller, customer_id, config_id, conf),
    )
