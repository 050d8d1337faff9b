"""The API app over the real service layer and a demo snapshot, with an API key for two customers."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from customer_pipelines.api.app import create_app
from customer_pipelines.api.keys import KeyRing, new_key
from customer_pipelines.api.service import Services


@pytest.fixture
def api(settings, write_snap, demo_customers, demo_configs):
    """The app over the real service layer and snapshot, with an API key for two customers each."""
    path = write_snap(demo_customers, demo_configs, path=settings.snapshot_file)
    services = Services(settings)
    first, second = sorted({c["customer_id"] for c in demo_configs})[:2]
    keys = {first: new_key(first, expires_at=None), second: new_key(second, expires_at=None)}
    services.keys = KeyRing(lambda: [issued.row for issued in keys.values()], refresh_seconds=3600)
    client = TestClient(create_app(services=services))

    def get(customer_id: str, path_: str = "/configs", *, as_: str | None = None) -> Any:
        return client.get(f"/customers/{customer_id}{path_}", headers={"X-API-Key": keys[as_ or customer_id].key})

    return services, path, get, first, second
