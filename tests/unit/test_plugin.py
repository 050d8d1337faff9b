"""The Airflow plugin (plugins/customer_pipelines_plugin.py): what loading it costs a process that only
needs its listeners and timetable (every task), and what the API server gets from it."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest
from fastapi import FastAPI

import customer_pipelines.api.app as api_app
import customer_pipelines.ui.app as page_app

PLUGINS_FOLDER = Path(__file__).resolve().parents[2] / "plugins"


def _load_plugin_file() -> ModuleType:
    """The plugins folder loaded by Airflow's own loader, as a task's listener manager loads it (the
    Task SDK's plugins manager: every .py file of the folder not in its .airflowignore, as a fresh module)."""
    from airflow.sdk.plugins_manager import _load_plugins_from_plugin_directory

    plugins, errors = _load_plugins_from_plugin_directory(plugins_folder=str(PLUGINS_FOLDER))
    assert errors == {}
    [ours] = [p for p in plugins if p.name == "customer_pipelines"]
    return sys.modules[type(ours).__module__]


@pytest.fixture
def apps_built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The apps built, by name (the real builders, counted)."""
    built: list[str] = []
    build_api, build_page = api_app.create_app_or_refusal, page_app.create_fleet_page_or_refusal

    def api() -> FastAPI:
        built.append("api")
        return build_api()

    def page(rest_api: FastAPI) -> FastAPI:
        built.append("page")
        return build_page(rest_api)

    monkeypatch.setattr(api_app, "create_app_or_refusal", api)
    monkeypatch.setattr(page_app, "create_fleet_page_or_refusal", page)
    return built


def test_loading_the_plugin_builds_no_app_so_a_task_loading_it_for_its_listeners_pays_nothing_for_them(
    apps_built: list[str],
) -> None:
    # A task process loads every plugin to find listeners; building the REST API and the fleet page
    # there was half of a task's CPU under a burst of 200 runs (bench/burst.py with py-spy).
    plugin = _load_plugin_file().CustomerPipelinesPlugin()

    assert apps_built == []
    assert plugin.listeners and plugin.timetables and plugin.external_views


def test_the_api_server_gets_both_apps_built_once_under_their_prefixes(apps_built: list[str]) -> None:
    plugin = _load_plugin_file().CustomerPipelinesPlugin()

    apps = plugin.fastapi_apps

    assert apps_built == ["api", "page"]
    assert [(a["url_prefix"], type(a["app"])) for a in apps] == [
        ("/customer-pipelines/api/v1", FastAPI),
        ("/customer-pipelines/fleet", FastAPI),
    ]
    assert all(a["name"] for a in apps)
    # Airflow reads the list again (its /plugins listing, `airflow plugins`): the same apps, not new ones.
    assert plugin.fastapi_apps is apps
    assert apps_built == ["api", "page"]
