"""Customer API keys: ``cpk_<key_id>_<secret>``. Only a hash is stored (``customer_api_keys``); the
key is shown once, when issued. The API holds the keys that can still authenticate in memory
(refreshed from BigQuery every CP_API_KEY_REFRESH_SECONDS, at once for a key id it has not seen),
so checking a key costs no BigQuery query."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

KEY_PATTERN = re.compile(r"cpk_(?P<key_id>[0-9a-f]{16})_(?P<secret>[A-Za-z0-9_-]{43})")
UNKNOWN_KEY_RELOAD_SECONDS = 5.0
"""At most one reload per this many seconds for key ids not held (a key issued by another server)."""


def hash_secret(key_id: str, secret: str) -> str:
    # The secret is 256 random bits: a fast hash is as safe as a slow one and costs no request time.
    return "sha256$" + hashlib.sha256(f"{key_id}:{secret}".encode()).hexdigest()


@dataclass(frozen=True)
class IssuedKey:
    key_id: str
    key: str
    """The whole key: returned once, never stored."""
    row: dict[str, Any]


def new_key(customer_id: str, *, expires_at: datetime | None, now: datetime | None = None) -> IssuedKey:
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    now = now or datetime.now(UTC)
    row = {
        "key_id": key_id,
        "customer_id": customer_id,
        "key_prefix": f"cpk_{key_id}",
        "key_hash": hash_secret(key_id, secret),
        "scopes": ["customer"],
        "created_at": now,
        "expires_at": expires_at,
        "revoked_at": None,
    }
    return IssuedKey(key_id, f"cpk_{key_id}_{secret}", row)


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    customer_id: str
    key_hash: str
    created_at: datetime | None
    expires_at: datetime | None


class KeyRing:
    """The keys that can authenticate, by key id. ``load`` is BigQuery's ``queries/api_keys.sql``."""

    def __init__(self, load: Any, refresh_seconds: float) -> None:
        self._load = load
        self._refresh_seconds = refresh_seconds
        self._keys: dict[str, KeyRecord] = {}
        self._loaded_at = 0.0
        self._unknown_reload_at = 0.0
        self._revoked: set[str] = set()
        """Keys this server revoked: refused even if a reload still returns them (a revocation just
        streamed into BigQuery)."""
        self._lock = threading.Lock()

    def _reload(self) -> None:
        rows = self._load()
        self._keys = {
            str(r["key_id"]): KeyRecord(
                str(r["key_id"]), str(r["customer_id"]), str(r["key_hash"]), r.get("created_at"), r.get("expires_at")
            )
            for r in rows
            if str(r["key_id"]) not in self._revoked
        }
        self._loaded_at = time.monotonic()

    def _record(self, key_id: str) -> KeyRecord | None:
        with self._lock:
            now = time.monotonic()
            if now - self._loaded_at > self._refresh_seconds:
                self._reload()
            elif key_id not in self._keys and now - self._unknown_reload_at > UNKNOWN_KEY_RELOAD_SECONDS:
                self._unknown_reload_at = now
                self._reload()
            return self._keys.get(key_id)

    def verify(self, presented: str, now: datetime | None = None) -> tuple[KeyRecord | None, str]:
        """(the key's record, "") when it authenticates, else (None, why not)."""
        match = KEY_PATTERN.fullmatch(presented.strip())
        if match is None:
            return None, "not an API key of this service"
        record = self._record(match["key_id"])
        if record is None or not hmac.compare_digest(record.key_hash, hash_secret(match["key_id"], match["secret"])):
            return None, "unknown or revoked API key"
        expires = record.expires_at
        if expires is not None and (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) <= (
            now or datetime.now(UTC)
        ):
            return None, "API key expired"
        return record, ""

    def add(self, row: dict[str, Any]) -> None:
        """A key this server just issued: usable at once."""
        with self._lock:
            self._keys[row["key_id"]] = KeyRecord(
                row["key_id"], row["customer_id"], row["key_hash"], row.get("created_at"), row.get("expires_at")
            )

    def revoke(self, key_id: str) -> None:
        """A key this server just revoked: refused at once (other servers at their next refresh)."""
        with self._lock:
            self._revoked.add(key_id)
            self._keys.pop(key_id, None)

    def of_customer(self, customer_id: str) -> list[KeyRecord]:
        with self._lock:
            if time.monotonic() - self._loaded_at > self._refresh_seconds:
                self._reload()
            return sorted((k for k in self._keys.values() if k.customer_id == customer_id), key=lambda k: k.key_id)
