"""``Idempotency-Key`` on routes that create things: a retried request gets the first answer
(status and body) instead of a second config, customer or key. Kept 24 h in PostgreSQL, shared by
every API server."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse

from customer_pipelines.api.auth import Caller
from customer_pipelines.api.errors import ApiError, invalid

MAX_KEY_LENGTH = 200


def once(request: Request, caller: Caller, body: Any, status: int, work: Callable[[], Any]) -> JSONResponse:
    """Run ``work`` unless the caller sent this request's Idempotency-Key before; answer ``status``
    with its result, or the first request's answer again."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return JSONResponse(jsonable_encoder(work()), status_code=status)
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise invalid("Idempotency-Key", f"must be 1-{MAX_KEY_LENGTH} printable characters")
    ledger = request.app.state.services.ledger
    scope = f"{caller.audit_name} {request.method} {request.url.path}"
    digest = hashlib.sha256(json.dumps(jsonable_encoder(body), sort_keys=True).encode()).hexdigest()
    first = ledger.idempotency_begin(scope, key, digest)
    if first is not None:
        return JSONResponse(first[1], status_code=first[0], headers={"Idempotent-Replayed": "true"})
    try:
        result = jsonable_encoder(work())
    except ApiError as exc:
        if exc.status < 500:
            ledger.idempotency_finish(scope, key, exc.status, {"status": exc.status, "detail": exc.detail})
        else:
            ledger.idempotency_abandon(scope, key)
        raise
    except BaseException:
        ledger.idempotency_abandon(scope, key)
        raise
    ledger.idempotency_finish(scope, key, status, result)
    return JSONResponse(result, status_code=status)
