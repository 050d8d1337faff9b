"""The fleet page's FastAPI app, which Airflow's API server mounts at ``/customer-pipelines/fleet``
and the Airflow UI shows as the "Customers" page (the plugin's external view).

Why an external view served by our own app, not a React app: the page is a server-rendered view of
figures the REST API's services already compute (no second implementation, no JavaScript build to
ship and pin), and it embeds in the UI's navigation as Airflow's own pages do. Authentication is the
UI's: the Airflow session cookie (the JWT Airflow's login sets), verified like every request of the
REST API, with the same operator permission; without a session the page redirects to Airflow's
login and shows nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from customer_pipelines.api.auth import Caller, authenticate, operator_access
from customer_pipelines.api.errors import ApiError
from customer_pipelines.ui.charts import bars, meter

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")),
    autoescape=select_autoescape(["html"]),
    auto_reload=False,
)
TEMPLATES.globals["meter"] = meter


class LoginRequired(Exception):
    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


async def page_caller(request: Request) -> Caller:
    """An Airflow user with the operators' permission; no session: to Airflow's login."""
    try:
        request.state.caller = await authenticate(request)
        return await operator_access(request)
    except ApiError as exc:
        if exc.status == 401:
            raise LoginRequired(str(request.url)) from None
        raise


PageCaller = Annotated[Caller, Depends(page_caller)]


def login_url(next_url: str) -> str:
    try:
        from airflow.api_fastapi.app import get_auth_manager

        return get_auth_manager().get_url_login(next_url=next_url)
    except Exception:  # noqa: BLE001 - no auth manager loaded (a bare app in a test): Airflow's default route
        return "/auth/login?" + urlencode({"next": next_url})


def dags_url(customer_id: str) -> str:
    """The Airflow UI's DAG list filtered by the customer's tag."""
    return "/dags?" + urlencode({"tags": f"customer:{customer_id}"})


def runs_url(customer_id: str) -> str:
    """The Airflow UI's DAG runs filtered to the customer's DAGs (``<customer_id>.<config_id>``)."""
    return "/dag_runs?" + urlencode({"dag_id_pattern": f"{customer_id}."})


def dag_url(dag_id: str) -> str:
    return f"/dags/{quote(dag_id, safe='')}"


def _render(name: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(TEMPLATES.get_template(name).render(**context))


def create_fleet_page(services: Any) -> FastAPI:
    """The page's app over the REST API's services (one instance per API server process)."""
    app = FastAPI(title="Customer pipelines: fleet page", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.services = services

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired) -> Response:
        return RedirectResponse(login_url(exc.next_url), status_code=303)

    @app.exception_handler(ApiError)
    async def refused(request: Request, exc: ApiError) -> Response:
        body = TEMPLATES.from_string(
            '{% extends "base.html" %}{% block body %}<h1>{{ status }}</h1><p>{{ detail }}</p>{% endblock %}'
        ).render(status=exc.status, detail=exc.detail)
        return HTMLResponse(body, status_code=exc.status)

    @app.get("/", response_class=HTMLResponse)
    def fleet_page(request: Request, caller: PageCaller, q: str = "", offset: int = 0) -> Response:
        overview = services.overview
        page = overview.customers(q[:200], max(offset, 0))
        fleet = overview.fleet()
        per_hour = fleet["runs_per_hour_next_24h"]
        by_day = fleet["success_by_day"]
        return _render(
            "fleet.html",
            fleet=fleet,
            page=page,
            problems=sorted(set(page["problems"]) | set(fleet["problems"])),
            runs_chart=bars(
                [h["runs"] for h in per_hour],
                [h["hour"][11:16] for h in per_hour],
                title="runs starting per hour, next 24 hours (UTC)",
            ),
            success_chart=_success_chart(by_day),
        )

    @app.get("/customers/{customer_id}", response_class=HTMLResponse)
    def customer_page(request: Request, customer_id: str, caller: PageCaller) -> Response:
        row = services.overview.customer(customer_id)
        if row is None:
            raise ApiError(404, f"customer {customer_id} not found")
        return _render(
            "customer.html",
            c=row,
            dags_url=dags_url(customer_id),
            runs_url=runs_url(customer_id),
            dag_url=dag_url,
            success_chart=_success_chart(services.overview.success_by_day(customer_id)),
        )

    return app


def _success_chart(by_day: list[dict[str, Any]]) -> str:
    return bars(
        [None if d["success_rate"] is None else round(d["success_rate"] * 100, 1) for d in by_day],
        [d["day"][5:] for d in by_day],
        title="success rate per day, last 7 days (completed of finished runs)",
        unit="%",
        top=100,
    )


def create_fleet_page_or_refusal(api: FastAPI) -> FastAPI:
    """The page over the REST API app's services; if the API could not be built (its refusal app
    has none), a page that answers 503 with the API's reason."""
    services = getattr(api.state, "services", None)
    if services is not None:
        return create_fleet_page(services)
    refusal = FastAPI(
        title="Customer pipelines: fleet page (unavailable)", docs_url=None, redoc_url=None, openapi_url=None
    )

    @refusal.get("/{path:path}", include_in_schema=False)
    def unavailable(path: str) -> Response:
        return HTMLResponse("<h1>503</h1><p>the customer pipelines API cannot start; see the API server's log</p>", 503)

    return refusal
