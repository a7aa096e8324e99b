"""The console's main journeys in a real browser (Playwright driving Debian's chromium) against a
real ``profilehub serve``, on SQLite and PostgreSQL: sign in, find a person by raw email, open the
profile and the identity graph, unmerge, erase, sign out. Any console message of type error (a script
error, a failed asset, a Content-Security-Policy violation) fails the journey.

Lean on purpose: one server and one browser per backend, one journey each.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from bench.console_people import merged_person
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.conftest import running_in_ci
from tests.serve_process import new_org, serve

CHROMIUM = Path("/usr/bin/chromium")


def _chromium_or_skip() -> None:
    if not CHROMIUM.exists():
        why = f"{CHROMIUM} is missing: run scripts/ensure-chromium (apt-get install chromium) as root"
        if running_in_ci():
            pytest.fail(f"CI=true and {why}")
        pytest.skip(f"CHROMIUM UNAVAILABLE, browser test not run: {why}")


def _in_a_browser(journey: Callable[[Browser], None]) -> None:
    """Run ``journey`` with a fresh chromium in a thread of its own.

    Playwright's sync API marks its event loop as the running one in the thread that uses it, between
    calls too; in the suite's own thread that broke every later test that calls ``asyncio.run()``.
    """

    def run() -> None:
        with sync_playwright() as playwright:
            # The sandbox needs user namespaces, which a root CI run (or a container) does not have.
            args = ["--no-sandbox"] if os.geteuid() == 0 else []
            launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=args)
            try:
                journey(launched)
            finally:
                launched.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(run).result()


def _watch(page: Page, errors: list[str]) -> None:
    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"{page.url}: {message.text}")

    page.on("console", console)
    page.on("pageerror", lambda exc: errors.append(f"{page.url}: {exc}"))


def test_sign_in_find_look_unmerge_erase_sign_out(database_url: str, tmp_path: Path) -> None:
    _chromium_or_skip()
    org = new_org(database_url)
    with serve(database_url, tmp_path) as server, httpx.Client(base_url=server.base, timeout=30) as api:
        person = merged_person(api, org.apikey, org.org_id, merged=3, email="ada.lovelace@example.org")
        ucid = person["ucid"]
        errors: list[str] = []

        def journey(browser: Browser) -> None:
            context = browser.new_context(base_url=server.base)
            page = context.new_page()
            _watch(page, errors)

            page.goto("/console")
            expect(page).to_have_url(re.compile(r"/console/sign-in$"))
            page.fill("#credential", org.apikey)
            page.click("button[type=submit]")
            expect(page).to_have_url(re.compile(r"/console/search$"))

            page.fill("#q", "  Ada.Lovelace@EXAMPLE.org ")
            page.click("form.search button[type=submit]")
            expect(page.locator("#results tbody tr")).to_have_count(1)
            page.click(f"#results a:has-text('{ucid}')")

            expect(page.locator("#ucid")).to_have_text(ucid)
            expect(page.locator("#category-profile")).to_contain_text("Lovelace")
            expect(page.locator("#category-consent")).to_contain_text("_ts")
            expect(page.locator("#ids")).to_contain_text("email_sha256_lowercase")
            expect(page.locator("#linked")).to_contain_text("Linked ucids (3)")
            # Each was merged through its Google Analytics client id alone (the email was the person's).
            expect(page.locator("#linked td[title='ga_clientid']")).to_have_count(3)
            expect(page.locator("#history tbody tr")).to_have_count(8)

            page.click("text=Identity graph")
            graph = page.locator("#graph")
            expect(graph).to_have_attribute("data-drawn", graph.get_attribute("data-nodes") or "none")
            expect(graph.locator("canvas").first).to_be_visible()

            page.click("text=Unmerge…")
            page.check("input[aria-label='unlink ga_clientid GA1.2.p1.1700000000']")
            page.click("#unmerge-button")
            expect(page.locator("#unmerged")).to_contain_text("The person is now 2 profiles")
            page.click(f"#unmerged a:has-text('{ucid}')")
            expect(page.locator("#linked")).to_contain_text("Linked ucids (2)")

            page.click("text=Erase…")
            expect(page.locator("#erase-button")).to_be_disabled()
            page.fill("#confirm", ucid)
            expect(page.locator("#erase-button")).to_be_enabled()
            page.click("#erase-button")
            expect(page.locator("#erased")).to_contain_text(ucid)

            page.click("text=People search")
            page.fill("#q", "ada.lovelace@example.org")
            page.click("form.search button[type=submit]")
            expect(page.locator("main")).to_contain_text("No profile holds that id.")

            page.click(".signout button")
            expect(page.locator("main")).to_contain_text("You have signed out.")
            page.goto("/console/search")
            expect(page).to_have_url(re.compile(r"/console/sign-in$"))
            context.close()

        _in_a_browser(journey)
    assert errors == []


def _sign_in(page: Page, credential: str) -> None:
    page.goto("/console/sign-in")
    page.fill("#credential", credential)
    page.click("button[type=submit]")
    expect(page).not_to_have_url(re.compile(r"/console/sign-in$"))


def _page_width(page: Page, path: str) -> int:
    page.goto(path)
    width: int = page.evaluate("document.documentElement.scrollWidth")
    return width


def test_pages_fit_the_window_without_scrolling_sideways(database_url: str, tmp_path: Path) -> None:
    # A phone (390 px) and a laptop (1280 px): the page itself never scrolls sideways, whatever a
    # value's length; a wide table may scroll inside its card.
    _chromium_or_skip()
    org = new_org(database_url)
    with serve(database_url, tmp_path) as server, httpx.Client(base_url=server.base, timeout=30) as api:
        person = merged_person(api, org.apikey, org.org_id, merged=2, email="ada.lovelace@example.org")
        long_value = "x" * 5000
        api.post(
            "/cdp/v1/users",
            json={
                "orgId": org.org_id,
                "region": "EU",
                "ids": {"email": "ada.lovelace@example.org"},
                "upsert": {"profile": {"note": long_value}},
            },
            headers=org.headers(),
        ).raise_for_status()
        company = api.put(
            "/v2/crm/companies?matchingAttribute=domain",
            json={"name": "United States Navy", "domain": "navy.example.org", "description": long_value},
            headers=org.bearer,
        )
        company.raise_for_status()
        crm_person = api.put(
            "/v2/crm/people?matchingAttribute=email",
            json={
                "firstName": "Grace",
                "lastName": "Hopper",
                "emails": ["grace.hopper.with.a.long.address@navy.example.org"],
                "jobTitle": "Rear admiral and computer scientist",
                "description": long_value,
                "companyId": company.json()["company"]["id"],
            },
            headers=org.bearer,
        )
        crm_person.raise_for_status()
        grace = crm_person.json()["person"]
        ucid = person["ucid"]
        profile_pages = [
            "/console/search",
            f"/console/profiles/{ucid}",
            f"/console/profiles/{ucid}/graph",
            f"/console/profiles/{ucid}/unmerge",
            f"/console/profiles/{ucid}/erase",
            "/console/explain",
            "/console/admin",
            "/console/no-such-page",
        ]
        crm_pages = [
            "/console/people",
            f"/console/people/{grace['id']}",
            "/console/companies",
            f"/console/companies/{company.json()['company']['id']}",
        ]
        too_wide: dict[str, int] = {}
        errors: list[str] = []

        def journey(browser: Browser) -> None:
            wide = browser.new_context(base_url=server.base, viewport={"width": 1280, "height": 800})
            page = wide.new_page()
            _watch(page, errors)
            _sign_in(page, org.apikey)
            if (width := _page_width(page, f"/console/profiles/{ucid}")) > 1280:
                too_wide[f"1280: /console/profiles/{ucid}"] = width
            wide.close()
            for credential, paths in ((org.apikey, profile_pages), (org.token, crm_pages)):
                narrow = browser.new_context(base_url=server.base, viewport={"width": 390, "height": 844})
                page = narrow.new_page()
                _watch(page, errors)
                page.goto("/console/sign-in")
                if (width := page.evaluate("document.documentElement.scrollWidth")) > 390:
                    too_wide["390: /console/sign-in"] = width
                _sign_in(page, credential)
                # The way out stays on the screen.
                box = page.locator(".signout button").bounding_box()
                if box is None or box["x"] + box["width"] > 390:
                    too_wide[f"390: sign out button at {page.url}"] = (
                        int(box["x"] + box["width"]) if box else -1
                    )
                for path in paths:
                    if (width := _page_width(page, path)) > 390:
                        too_wide[f"390: {path}"] = width
                narrow.close()

        _in_a_browser(journey)
    assert too_wide == {}
    assert [e for e in errors if "404" not in e] == []
