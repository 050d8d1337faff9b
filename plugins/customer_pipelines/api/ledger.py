"""What the API shares between its workers and servers, on PostgreSQL beside the quota ledger
(``include/sql/quota/002_api_schema.sql``): per-config write locks, version claims, idempotency.
Every wait is bounded like the quota ledger's (CP_QUOTA_DB_*_TIMEOUT_SECONDS)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Any

from customer_pipelines.api.errors import ApiError, invalid
from customer_pipelines.bigquery.sql import raw_sql
from customer_pipelines.runs.quota import LedgerConnection, QuotaLedger, QuotaLedgerError
from customer_pipelines.settings import Settings

IDEMPOTENCY_HOURS = 24


class ConfigWriteLock:
    """One config's writer, across every API worker and server: a PostgreSQL session advisory lock
    on its own connection, held from reading the current version to the Airflow update, so the
    order of versions is the order of effects in Airflow."""

    def __init__(self, connection: LedgerConnection, customer_id: str, config_id: str) -> None:
        self.conn = connection
        self.customer_id = customer_id
        self.config_id = config_id

    def head(self) -> int:
        """The highest version the API has claimed for this config (0: none)."""
        row = self.conn.execute(
            "SELECT COALESCE(MAX(version), 0) FROM cp_api_config_versions WHERE customer_id = %s AND config_id = %s",
            (self.customer_id, self.config_id),
        ).fetchone()
        return int(row[0])

    def claim(self, version: int) -> bool:
        """Claim ``version``; False if it was claimed already (another writer got there first)."""
        row = self.conn.execute(
            "INSERT INTO cp_api_config_versions (customer_id, config_id, version) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING version",
            (self.customer_id, self.config_id, version),
        ).fetchone()
        return row is not None

    def release(self, version: int) -> None:
        """Give a claim back: the BigQuery write it was for did not happen."""
        self.conn.execute(
            "DELETE FROM cp_api_config_versions WHERE customer_id = %s AND config_id = %s AND version = %s",
            (self.customer_id, self.config_id, version),
        )


class ApiLedger:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._schema_ready = False

    @cached_property
    def _quota(self) -> QuotaLedger:
        # On first use, not at start: an API server without CP_QUOTA_DB_URL still serves its reads.
        return QuotaLedger(self.settings)

    def ensure_schema(self) -> None:
        if self._schema_ready:
            return
        self._quota.ensure_schema()
        with self._quota._transaction() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('cp_api_schema'))")
            conn.execute(raw_sql("quota/002_api_schema.sql"))
        self._schema_ready = True

    @contextmanager
    def config_writer(
        self, customer_id: str, config_id: str, *, wait_seconds: float = 15.0
    ) -> Iterator[ConfigWriteLock]:
        """The config's write lock; 503 with Retry-After if another writer holds it longer than
        ``wait_seconds`` (a BigQuery write is bounded at 15 s)."""
        self.ensure_schema()
        conn = LedgerConnection(self._quota.url, self.settings)
        key = f"cp_config:{customer_id}/{config_id}"
        try:
            deadline, delay = time.monotonic() + wait_seconds, 0.005
            while not conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (key,)).fetchone()[0]:
                if time.monotonic() > deadline:
                    raise ApiError(
                        503,
                        f"config {config_id} is being changed by another request; try again",
                        headers={"Retry-After": "2"},
                    )
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
            yield ConfigWriteLock(conn, customer_id, config_id)
        finally:
            conn.close()  # ends the session: releases the advisory lock whatever happened

    # -- idempotency --------------------------------------------------------------------------

    def idempotency_begin(self, scope: str, key: str, request_hash: str) -> tuple[int, Any] | None:
        """None: this request is the first with the key (the caller does the work, then
        ``idempotency_finish``). Else the first request's (status, body) to answer again."""
        self.ensure_schema()
        with self._quota._transaction() as conn:
            conn.execute(
                "DELETE FROM cp_api_idempotency WHERE created_at < now() - make_interval(hours => %s)",
                (IDEMPOTENCY_HOURS,),
            )
            inserted = conn.execute(
                "INSERT INTO cp_api_idempotency (scope, idempotency_key, request_hash) VALUES (%s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING 1",
                (scope, key, request_hash),
            ).fetchone()
            if inserted:
                return None
            stored_hash, status, body = conn.execute(
                "SELECT request_hash, status_code, body FROM cp_api_idempotency"
                " WHERE scope = %s AND idempotency_key = %s",
                (scope, key),
            ).fetchone()
        if stored_hash != request_hash:
            raise invalid("Idempotency-Key", "already used with a different request body")
        if status is None:
            raise ApiError(409, "a request with this Idempotency-Key is still running", headers={"Retry-After": "1"})
        return int(status), body

    def idempotency_finish(self, scope: str, key: str, status: int, body: Any) -> None:
        with self._quota._transaction() as conn:
            conn.execute(
                "UPDATE cp_api_idempotency SET status_code = %s, body = %s::jsonb"
                " WHERE scope = %s AND idempotency_key = %s",
                (status, json.dumps(body, default=str), scope, key),
            )

    def idempotency_abandon(self, scope: str, key: str) -> None:
        """The first request failed: a retry with the key does the work again."""
        try:
            with self._quota._transaction() as conn:
                conn.execute(
                    "DELETE FROM cp_api_idempotency WHERE scope = %s AND idempotency_key = %s AND status_code IS NULL",
                    (scope, key),
                )
        except QuotaLedgerError:
            pass  # the row expires with the others

    # -- quota usage (read-only) --------------------------------------------------------------

    def usage(self, customer_id: str, day: Any, month: Any) -> tuple[int, int]:
        """(executions today, this month) as the quota gate counts them."""
        self.ensure_schema()
        with self._quota._transaction() as conn:
            row = conn.execute(
                raw_sql("quota/reserve.sql"), {"customer_id": customer_id, "usage_day": day, "usage_month": month}
            ).fetchone()
        return int(row[0]), int(row[1])

    def usage_by_customer(self, day: Any, month: Any) -> tuple[dict[str, int], dict[str, int]]:
        """Every customer's executions on ``day`` and in ``month`` (two reads, for the fleet page)."""
        self.ensure_schema()
        return self._quota.used_on(day), self._quota.used_in_month(month)
