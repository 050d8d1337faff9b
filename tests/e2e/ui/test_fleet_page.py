"""The fleet page on the running stack: Airflow's API server serves it and lists it in the UI's
navigation; without a session it redirects to Airflow's login and shows nothing; in a real headless
Chromium (Debian's, driven by Playwright) an operator logs in through Airflow's own login page, sees
the demo customers with their plans' quota figures, searches, opens a customer and follows the link
to its DAGs in the Airflow UI. Screenshots are kept under ``$CP_TEST_ARTIFACTS`` (default
``test-artifacts/`` in the checkout)."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from customer_pipelines.local.airflow import admin_password, api_url
from customer_pipelines.seed import demo_dataset
from customer_pipelines.ui import URL_PREFIX

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("CP_TEST_ARTIFACTS", Path(__file__).resolve().parents[3] / "test-artifacts")) / "ui"


def _limits() -> dict[str, tuple[int, int]]:
    return {s["customer_id"]: (s["daily_run_limit"], s["monthly_run_limit"]) for s in demo_dataset().subscriptions}


@pytest.fixture(scope="module")
def base(stack) -> str:
    info, _ = stack
    return api_url(info.settings)


def test_the_page_without_a_session_redirects_to_airflows_login_and_shows_no_data(base, api):
    for path in ("/", "/customers/cust_acme_001"):
        response = httpx.get(f"{base}{URL_PREFIX}{path}", follow_redirects=False, timeout=30)
        assert response.status_code == 303, response.text[:300]
        location = response.headers["location"]
        assert "/auth/login" in location and "next=" in location, location
        assert "cust_acme_001" not in response.text and "cust_globex_001" not in response.text
    # A bad session cookie is no session either.
    refused = httpx.get(f"{base}{URL_PREFIX}/", cookies={"_token": "not.a.jwt"}, follow_redirects=False, timeout=30)
    assert refused.status_code in (303, 401) and "cust_acme_001" not in refused.text


def test_a_customers_api_key_never_opens_the_operators_page(base, api):
    from tests_support import onboard

    key = onboard(api, "cust_page_key")["api_key"]
    response = httpx.get(f"{base}{URL_PREFIX}/", headers={"X-API-Key": key}, follow_redirects=False, timeout=30)
    assert response.status_code == 403
    assert "cust_acme_001" not in response.text


def test_airflow_lists_the_page_in_the_ui_navigation(stack):
    _, client = stack
    plugins = client.plugins()
    [ours] = [p for p in plugins if p["name"] == "customer_pipelines"]
    [view] = ours["external_views"]
    assert (view["name"], view["href"], view["destination"], view["url_route"]) == (
        "Customers",
        f"{URL_PREFIX}/",
        "nav",
        "customers",
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: `make install` installs Debian's chromium"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright, tempfile.TemporaryDirectory(prefix="cp-chromium-") as profile:
        # A fresh user-data-dir: the persistent context's own directory.
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 900},
        )
        try:
            yield context
        finally:
            context.close()


def _log_in(page: Any, base: str, password: str) -> bool:
    """Open the page; log in through Airflow's login page unless the browser has a session already
    (returns whether it had to)."""
    page.goto(f"{base}{URL_PREFIX}/")
    if "/auth/login" not in page.url:
        page.wait_for_selector("table#customers", timeout=60_000)
        return False
    page.screenshot(path=str(ARTIFACTS / "01-login.png"))
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/auth/login" not in url, timeout=60_000)
    assert URL_PREFIX in page.url, f"after the login Airflow sends the operator back to the page, not {page.url}"
    page.wait_for_selector("table#customers", timeout=60_000)
    return True


def test_an_operator_logs_in_sees_the_demo_customers_quota_and_follows_a_link_to_their_dags(stack, base, browser):
    info, _ = stack
    page = browser.new_page()
    assert _log_in(page, base, admin_password(info.settings)), "a new browser goes through Airflow's login"
    page.screenshot(path=str(ARTIFACTS / "02-fleet-page.png"), full_page=True)
    assert page.locator("svg.chart").count() == 2, "runs per hour ahead and success by day"
    assert page.locator(".problems").count() == 0, page.locator(".problems").all_inner_texts()

    for customer_id, (daily, monthly) in _limits().items():
        page.fill("input[name=q]", customer_id)
        page.click("form.search button[type=submit]")
        row = page.locator(f"tr[data-customer='{customer_id}']")
        row.wait_for(timeout=30_000)
        assert page.locator("table#customers tbody tr").count() == 1, "the search shows the one customer"
        assert re.fullmatch(rf"\d+ / {daily}", row.locator("[data-quota=today] .meter-text").inner_text()), daily
        assert re.fullmatch(rf"\d+ / {monthly}", row.locator("[data-quota=month] .meter-text").inner_text()), monthly
    page.screenshot(path=str(ARTIFACTS / "03-search.png"), full_page=True)

    page.click("tr[data-customer='cust_globex_001'] a")
    page.wait_for_selector("table#configs", timeout=30_000)
    assert page.locator("table#configs tbody tr").count() == 2
    page.screenshot(path=str(ARTIFACTS / "04-customer.png"), full_page=True)
    assert page.get_attribute("#runs-link", "href") == "/dag_runs?dag_id_pattern=cust_globex_001."
    page.click("#dags-link")
    page.wait_for_url(re.compile(r"/dags\?tags=customer%3Acust_globex_001"), timeout=60_000)
    page.get_by_text("globex_aws_cost_daily").first.wait_for(timeout=60_000)
    page.get_by_text("globex_azure_compliance_monthly").first.wait_for(timeout=60_000)
    assert page.get_by_text("acme_gcp_cost_daily").count() == 0, "only the customer's DAGs"
    page.screenshot(path=str(ARTIFACTS / "05-customer-dags.png"), full_page=True)
    # Inside the Airflow UI: the navigation's entry shows the page in the UI's frame.
    page.goto(f"{base}/plugin/customers")
    page.frame_locator("iframe").locator("table#customers").wait_for(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "06-in-airflow-ui.png"), full_page=True)
    page.close()


def test_the_page_shows_an_open_alert_and_drops_it_once_cleared(stack, base, browser):
    """An episode opened and closed in the stack's alert record as a syncer round does (the other
    episodes the stack's own rounds opened are kept as they are: the shared stack's other tests fail
    runs and fill quotas on purpose)."""
    from datetime import UTC, datetime

    from customer_pipelines.runs.fleet_alerts import AlertEpisodes, Condition

    info, _ = stack
    page = browser.new_page()
    _log_in(page, base, admin_password(info.settings))  # the context keeps the session: straight back
    episodes = AlertEpisodes(info.settings.state_dir)
    others = {
        key: Condition(key, str(e["kind"]), str(e.get("customer_id", "")), str(e.get("message", "")))
        for key, e in episodes.open().items()
    }
    waiting = Condition("RUNS_WAITING", "RUNS_WAITING", "", "1500 runs waiting to start (threshold 1000)")
    opened = episodes.update({**others, waiting.key: waiting}, datetime.now(UTC))
    try:
        assert [c.key for c in opened.raised] == ["RUNS_WAITING"] and opened.cleared == []
        page.reload()
        alert = page.locator("[data-alert=RUNS_WAITING]")
        alert.wait_for(timeout=30_000)
        assert "1500 runs waiting to start (threshold 1000)" in alert.inner_text()
        page.screenshot(path=str(ARTIFACTS / "07-alert.png"))
    finally:
        closed = episodes.update(others, datetime.now(UTC))
    assert [e["key"] for e in closed.cleared] == ["RUNS_WAITING"] and closed.raised == []
    page.reload()
    page.wait_for_selector("table#customers", timeout=30_000)
    assert page.locator("[data-alert=RUNS_WAITING]").count() == 0
    page.close()
