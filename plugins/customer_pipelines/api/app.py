"""The FastAPI app Airflow's API server mounts at ``/customer-pipelines/api/v1`` (plugin
``fastapi_apps``). Authentication is an app-level dependency: no route can be added without it."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from customer_pipelines.api.auth import authenticate
from customer_pipelines.api.errors import install_error_handlers
from customer_pipelines.api.routes import configs, operators, recovery, runs
from customer_pipelines.settings import Settings, get_settings

URL_PREFIX = "/customer-pipelines/api/v1"


def create_app(settings: Settings | None = None, services: object | None = None) -> FastAPI:
    from customer_pipelines.api.service import Services

    app = FastAPI(
        title="Customer pipelines API",
        version="1",
        description=(
            "Customers' pipeline configs, their runs and usage, and the platform's customers. "
            "Authenticate with an Airflow token (`Authorization: Bearer`, from Airflow's `POST /auth/token`) "
            "or a customer API key (`X-API-Key`). Errors are RFC 9457 problem details."
        ),
        dependencies=[Depends(authenticate)],
    )
    app.state.services = services or Services(settings or get_settings())
    install_error_handlers(app)
    for router in (configs.router, runs.router, recovery.router, operators.router):
        app.include_router(router)
    return app


def create_app_or_refusal() -> FastAPI:
    """The app, or, if it cannot be built (an invalid setting), one that answers every request 503
    with the reason: the plugin must load anyway (it also registers the DAGs' timetable)."""
    try:
        return create_app()
    except Exception as exc:  # noqa: BLE001 - reported on every request instead
        reason = f"{type(exc).__name__}: {exc}"
        refusal = FastAPI(title="Customer pipelines API (unavailable)")

        @refusal.api_route("/{path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
        def unavailable(path: str) -> None:
            from customer_pipelines.api.errors import ApiError

            raise ApiError(503, f"the customer pipelines API cannot start: {reason}")

        install_error_handlers(refusal)
        return refusal
