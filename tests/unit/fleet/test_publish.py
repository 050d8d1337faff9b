"""What ``snapshot refresh`` publishes itself, decided before Airflow is reached (the publishing on a
real stack: tests/e2e/test_fleet_parsing.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from customer_pipelines.fleet import publish
from customer_pipelines.settings import Settings


def _unreachable(*args: object, **kwargs: object) -> None:
    raise AssertionError("Airflow's metadata database was reached")


@pytest.fixture
def no_metadata_db(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(publish, "_existing_dags", _unreachable)
    monkeypatch.setattr(publish, "shard_bundle", _unreachable)


def test_a_refresh_that_cannot_say_what_changed_publishes_nothing_itself(no_metadata_db):
    result = publish.publish_dags(Settings(), None)
    assert result == publish.PublishResult()


def test_a_bulk_change_is_left_to_the_dag_processor_whole(no_metadata_db):
    many = {f"cust_{i:03d}.cfg" for i in range(publish.MAX_PUBLISHED + 1)}
    result = publish.publish_dags(Settings(), many)
    assert result.published == [] and result.left == sorted(many) and result.failures == []


def test_up_to_the_limit_every_changed_dag_airflow_has_is_published_and_a_new_one_is_left(monkeypatch):
    changed = {f"cust_{i:03d}.cfg" for i in range(publish.MAX_PUBLISHED)}
    new = "cust_000.cfg"
    monkeypatch.setattr(publish, "_existing_dags", lambda settings, ids: set(ids) - {new})
    monkeypatch.setattr(publish, "shard_bundle", lambda settings: ("dags-folder", Path("/x"), ""))
    written: list[str] = []
    monkeypatch.setattr(publish, "_publish_one", lambda settings, dag_id, *rest: written.append(dag_id) or True)
    result = publish.publish_dags(Settings(), changed)
    assert result.published == written == sorted(changed - {new})
    assert result.left == [new]


def test_a_metadata_database_that_cannot_be_reached_fails_nothing_and_says_why(monkeypatch):
    def down(settings: Settings, ids: list[str]) -> set[str]:
        raise ConnectionError("connection refused")

    monkeypatch.setattr(publish, "_existing_dags", down)
    result = publish.publish_dags(Settings(), {"cust_a.cfg"})
    assert result.published == [] and result.left == ["cust_a.cfg"]
    assert result.failures == ["cannot read which DAGs Airflow has: ConnectionError: connection refused"]


def test_one_dag_that_fails_to_publish_leaves_the_others_published(monkeypatch):
    monkeypatch.setattr(publish, "_existing_dags", lambda settings, ids: set(ids))
    monkeypatch.setattr(publish, "shard_bundle", lambda settings: ("dags-folder", Path("/x"), ""))

    def one(settings: Settings, dag_id: str, *rest: object) -> bool:
        if dag_id == "cust_a.bad":
            raise RuntimeError("lock timeout")
        return True

    monkeypatch.setattr(publish, "_publish_one", one)
    result = publish.publish_dags(Settings(), {"cust_a.bad", "cust_a.good"})
    assert result.published == ["cust_a.good"] and result.left == ["cust_a.bad"]
    assert result.failures == ["cust_a.bad: RuntimeError: lock timeout"]


def test_the_parsing_context_is_one_dags_and_is_restored_after(monkeypatch):
    from airflow.sdk import get_parsing_context

    monkeypatch.delenv("_AIRFLOW_PARSING_CONTEXT_DAG_ID", raising=False)
    with publish.parsing_context("cust_a.cfg"):
        assert get_parsing_context().dag_id == "cust_a.cfg"
    assert get_parsing_context().dag_id is None


def test_what_airflow_prints_while_publishing_goes_to_stderr_not_into_the_commands_result(monkeypatch, capsys):
    def chatty(settings: Settings, wanted: list[str], result: publish.PublishResult) -> None:
        print("[info] DAG bundles loaded: dags-folder")  # as Airflow's structlog loggers write
        result.published.extend(wanted)

    monkeypatch.setattr(publish, "_publish", chatty)
    result = publish.publish_dags(Settings(), {"cust_a.cfg"})
    out, err = capsys.readouterr()
    assert result.published == ["cust_a.cfg"]
    assert out == "" and "DAG bundles loaded" in err
