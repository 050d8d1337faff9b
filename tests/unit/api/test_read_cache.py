"""The JSON answers of list/get, cached per snapshot generation: a read after a write sees the
write, whichever writer swapped the snapshot in; a customer never gets another customer's answer."""

from __future__ import annotations

from typing import Any

from customer_pipelines.api.service import ReadCache, SnapshotPatcher
from customer_pipelines.snapshot import patch_snapshot, refresh_lock


def configs_of(demo_configs: list[dict[str, Any]], customer_id: str) -> list[dict[str, Any]]:
    return [c for c in demo_configs if c["customer_id"] == customer_id]


def test_a_repeated_read_is_answered_from_the_cache(api, monkeypatch):
    services, _, get, first, _ = api
    listed, one = get(first), get(first, f"/configs/{get(first).json()['items'][0]['config_id']}")
    assert listed.status_code == one.status_code == 200

    def no_reads(*_: Any, **__: Any) -> Any:
        raise AssertionError("read the snapshot again")

    monkeypatch.setattr(services, "list_configs", no_reads)
    monkeypatch.setattr(services, "get_config", no_reads)
    again = get(first)
    assert again.status_code == 200 and again.content == listed.content
    assert again.headers["content-type"] == "application/json"
    assert get(first, f"/configs/{one.json()['config_id']}").content == one.content


def test_a_read_after_a_write_sees_the_write(api, demo_configs):
    services, _, get, first, _ = api
    row = configs_of(demo_configs, first)[0]
    assert get(first, f"/configs/{row['config_id']}").json()["display_name"] == row["display_name"]
    get(first)  # cached, like the single config
    services.patcher.patch(configs=[{**row, "display_name": "renamed", "version": row["version"] + 1}])
    assert get(first, f"/configs/{row['config_id']}").json()["display_name"] == "renamed"
    listed = {c["config_id"]: c for c in get(first).json()["items"]}
    assert listed[row["config_id"]]["display_name"] == "renamed"


def test_a_write_by_another_api_worker_is_seen_at_once(api, demo_configs):
    """Another worker process has its own caches: what it shares with this one is the snapshot file."""
    _, path, get, first, _ = api
    row = configs_of(demo_configs, first)[0]
    before = get(first).json()["items"]
    SnapshotPatcher(path).patch(configs=[{**row, "deleted_at": "2026-01-01T00:00:00+00:00"}])  # the other worker
    after = get(first).json()["items"]
    assert [c["config_id"] for c in after] == [c["config_id"] for c in before if c["config_id"] != row["config_id"]]
    assert get(first, f"/configs/{row['config_id']}").status_code == 404
    with refresh_lock(path):  # and a sync round's refresh or patch, the same way
        patch_snapshot(path, configs=[row], source="sync")
    assert get(first, f"/configs/{row['config_id']}").status_code == 200


def test_a_customer_never_gets_another_customers_answer(api, demo_configs):
    _, _, get, first, second = api
    mine = get(first).json()["items"]
    theirs = get(second).json()["items"]
    assert {c["customer_id"] for c in mine} == {first} and {c["customer_id"] for c in theirs} == {second}
    assert [c["config_id"] for c in theirs] == sorted(c["config_id"] for c in configs_of(demo_configs, second))
    # With the first customer's answers cached, the second customer's key still gets 404 for them.
    config_id = mine[0]["config_id"]
    assert get(first, f"/configs/{config_id}").status_code == 200
    assert get(first, as_=second).status_code == 404
    assert get(first, f"/configs/{config_id}", as_=second).status_code == 404


def test_the_read_cache_holds_one_generation_and_a_bounded_number_of_answers():
    cache = ReadCache(max_entries=2)
    cache.put((1, 1, 1), ("a", "configs"), b"old")
    assert cache.get((1, 1, 1), ("a", "configs")) == b"old"
    assert cache.get((2, 1, 1), ("a", "configs")) is None, "another generation's answer"
    assert cache.get(None, ("a", "configs")) is None
    cache.put((2, 1, 1), ("b", "configs"), b"new")
    assert cache.get((1, 1, 1), ("a", "configs")) is None, "a new generation empties the cache"
    cache.put((2, 1, 1), ("c", "configs"), b"c")
    cache.put((2, 1, 1), ("d", "configs"), b"d")
    assert cache.get((2, 1, 1), ("d", "configs")) is None and cache.get((2, 1, 1), ("c", "configs")) == b"c"
