"""Who is asking, and what they may do. Declared once for the whole app (an app-level dependency):
a request is either an Airflow user, through Airflow's own auth manager (a JWT in ``Authorization:
Bearer`` or Airflow's session cookie), acting on every customer as their Airflow permissions allow,
or a customer API key (``X-API-Key``), acting on its own customer only. If Airflow's auth machinery
cannot be loaded, every request is refused (deny-all), never let through."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from fastapi import Request
from starlette.concurrency import run_in_threadpool

from customer_pipelines.api.errors import ApiError

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"

try:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    AUTH_UNAVAILABLE: str | None = None
except Exception as exc:  # noqa: BLE001 - any failure to load means deny-all, reported on every request
    AUTH_UNAVAILABLE = f"{type(exc).__name__}: {exc}"
    log.error("Airflow's auth machinery cannot be loaded; the customer pipelines API refuses every request: %s", exc)


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: an Airflow user (``user``) or a customer's API key (``customer_id``)."""

    name: str
    user: Any = None
    key_id: str | None = None
    customer_id: str | None = None
    allowed: dict[tuple[str, str], bool] = field(default_factory=dict, compare=False, repr=False)
    """Airflow's answers for this user, by (check, method): kept as long as the caller is (see VerifiedTokens)."""

    @property
    def is_api_key(self) -> bool:
        return self.key_id is not None

    @property
    def audit_name(self) -> str:
        return f"api-key:{self.key_id}" if self.is_api_key else f"airflow:{self.name}"


class RateLimiter:
    """A token bucket per caller (CP_API_RATE_LIMIT_PER_MINUTE, bursts of the same size), in this
    API server's memory: with several servers each enforces its own share."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def retry_after(self, who: str) -> float:
        """0 when the request may go now (and is counted), else seconds until it may."""
        with self._lock:
            now = time.monotonic()
            tokens, at = self._buckets.get(who, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens >= 1:
                self._buckets[who] = (tokens - 1, now)
                return 0.0
            self._buckets[who] = (tokens, now)
            return (1 - tokens) / self.rate


class VerifiedTokens:
    """Airflow tokens this API server verified lately, by the exact token string: the caller each one
    authenticated, for CP_API_TOKEN_CACHE_SECONDS and never past the token's ``exp``. Verifying a
    token costs a query of Airflow's database on the event loop (its revoked-token check), which
    every request of a client would otherwise repeat. At most ``max_entries`` tokens are held."""

    def __init__(self, seconds: float, max_entries: int = 1024) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._held: dict[str, tuple[Caller, float]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Caller | None:
        with self._lock:
            held = self._held.get(token)
            if held is None:
                return None
            if time.monotonic() < held[1]:
                return held[0]
            del self._held[token]
            return None

    def put(self, token: str, caller: Caller) -> None:
        """Hold the caller of a token Airflow has just verified (its signature and ``exp`` checked)."""
        if self.seconds <= 0:
            return
        try:
            expires_in = float(jwt.decode(token, options={"verify_signature": False})["exp"]) - time.time()
        except (jwt.InvalidTokenError, KeyError, TypeError, ValueError):
            return  # no readable exp: not held, verified again next time
        now = time.monotonic()
        with self._lock:
            if len(self._held) >= self.max_entries:
                self._held = {t: held for t, held in self._held.items() if held[1] > now}
                if len(self._held) >= self.max_entries:
                    self._held.pop(next(iter(self._held)))  # the oldest held
            self._held[token] = (caller, now + min(self.seconds, expires_in))


async def authenticate(request: Request) -> Caller:
    """The app-level dependency: every route runs it before its own code."""
    if AUTH_UNAVAILABLE is not None:
        raise ApiError(503, "authentication is unavailable on this server; every request is refused")
    services = request.app.state.services
    presented = request.headers.get(API_KEY_HEADER)
    if presented is not None:
        record, why = services.keys.verify(presented)
        if record is None:
            raise ApiError(401, why, headers={"WWW-Authenticate": API_KEY_HEADER})
        caller = Caller(name=f"key {record.key_id}", key_id=record.key_id, customer_id=record.customer_id)
    else:
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else request.cookies.get(COOKIE_NAME_JWT_TOKEN, "")
        if not token:
            raise ApiError(
                401,
                f"send an Airflow token (Authorization: Bearer) or an API key ({API_KEY_HEADER})",
                headers={"WWW-Authenticate": "Bearer"},
            )
        held = services.verified_tokens.get(token)
        if held is not None:
            caller = held
        else:
            try:
                user = await resolve_user_from_token(token)
            except Exception as exc:  # noqa: BLE001 - Airflow's HTTPException (expired, invalid) or worse
                raise ApiError(401, f"Airflow token refused: {getattr(exc, 'detail', exc)}") from None
            caller = Caller(name=str(user.get_name()), user=user)
            services.verified_tokens.put(token, caller)
    wait = services.rate_limiter.retry_after(caller.audit_name)
    if wait > 0:
        raise ApiError(429, "too many requests from this caller", headers={"Retry-After": str(max(1, round(wait)))})
    request.state.caller = caller
    return caller


def _ask_airflow(user: Any, check: str, method: str) -> bool:
    manager = get_auth_manager()
    if check == "dag":
        return bool(manager.is_authorized_dag(method=method, user=user))
    return bool(manager.is_authorized_pool(method=method, user=user))


async def _airflow_allows(caller: Caller, check: str, method: str) -> bool:
    allowed = caller.allowed.get((check, method))
    if allowed is None:
        # An auth manager may ask a database or an identity provider: not on the event loop. The
        # answer is kept with the caller, which VerifiedTokens holds for a few seconds at most.
        allowed = await run_in_threadpool(_ask_airflow, caller.user, check, method)
        caller.allowed[(check, method)] = allowed
    return allowed


def _method_of(request: Request) -> str:
    return "GET" if request.method in ("GET", "HEAD") else "PUT" if request.method == "PATCH" else request.method


async def customer_access(request: Request) -> Caller:
    """A customer's own data (configs, runs, usage): its API key, or an Airflow user with the DAG
    permission of the request's method (read: GET; a change: PUT, which POST and PATCH ask; DELETE)."""
    caller: Caller = request.state.caller
    customer_id = request.path_params.get("customer_id")
    if caller.is_api_key:
        if customer_id != caller.customer_id:
            # Not 403: another customer's ids are not revealed, even whether they exist.
            raise ApiError(404, f"customer {customer_id} not found")
        return caller
    # A config's create, pause or trigger changes a DAG: Airflow's "edit" (PUT). FAB's roles grant
    # no "create" on DAGs at all (DAGs come from files), so a POST asked as such was refused to Admin.
    method = "PUT" if _method_of(request) == "POST" else _method_of(request)
    if not await _airflow_allows(caller, "dag", method):
        raise ApiError(403, f"Airflow user {caller.name} may not {method} customer pipelines")
    return caller


async def operator_access(request: Request) -> Caller:
    """The platform's own operations (customers, plans, keys, fleet status): Airflow users only,
    with the pool permission of the request's method (a customer's plan is its pool's slots)."""
    caller: Caller = request.state.caller
    if caller.is_api_key:
        raise ApiError(403, "this route is for the platform's operators (an Airflow user), not an API key")
    if not await _airflow_allows(caller, "pool", _method_of(request)):
        raise ApiError(403, f"Airflow user {caller.name} may not {_method_of(request)} customers (pool permission)")
    return caller


AUTHORIZERS: tuple[Callable[..., Caller], ...] = (customer_access, operator_access)
"""Every route depends on exactly one of these (the route-table test checks it)."""
