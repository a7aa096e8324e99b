"""The console's answers to bad input: a clear HTML page with a 4xx, never a 500, nothing written.

A wrong key, a foreign ucid, a stale CSRF token, a forged form, a missing scope and a revoked key
each get their own page. The browser journeys are in test_console_browser.py.
"""

from __future__ import annotations

import gzip
import html
import re
from datetime import datetime
from urllib.parse import urlencode

import httpx
import pytest
from bench.console_people import merged_person
from fastapi import FastAPI
from fastapi.testclient import TestClient

from profilehub.auth import CredentialKind, create_credential, revoke_credential
from profilehub.delivery.endpoints import create_endpoint, set_enabled
from profilehub.store.changes import now_ms
from profilehub.store.tables import console_sessions
from tests.cdp_client import Cdp
from tests.conftest import OrgFixture, make_org
from tests.console_client import csrf_of, message_of, sign_in


def _person(client: TestClient, org: OrgFixture, email: str = "ada.lovelace@example.org") -> str:
    written = Cdp(client, org).write({"email": email}, {"profile": {"first_name": "Ada"}})
    return str(written["ucid"])


def _page(response: httpx.Response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert words in message_of(response), message_of(response)


def test_a_wrong_key_gets_a_sign_in_error_page(client: TestClient, org: OrgFixture) -> None:
    form = client.get("/console/sign-in")
    wrong = client.post("/console/sign-in", data={"credential": org.apikey + "x", "csrf": csrf_of(form)})
    _page(wrong, 401, "unknown or revoked credential")
    junk = client.post("/console/sign-in", data={"credential": "hunter2", "csrf": csrf_of(form)})
    _page(junk, 401, "apikey (phk_...) or a CRM token")
    assert "profilehub_console" not in client.cookies


def test_a_foreign_or_malformed_ucid_is_not_found(client: TestClient, app: FastAPI, org: OrgFixture) -> None:
    other = make_org(app.state.db, org_id=999)
    foreign = _person(client, other)
    sign_in(client, org.apikey)
    _page(client.get(f"/console/profiles/{foreign}"), 404, f"no profile with ucid {foreign} in org 1234")
    _page(client.get(f"/console/profiles/{foreign}/graph"), 404, "no profile with ucid")
    _page(client.get("/console/profiles/not-a-ucid"), 400, "is not a ucid")


def test_a_stale_csrf_token_is_refused_and_erases_nothing(client: TestClient, org: OrgFixture) -> None:
    ucid = _person(client, org)
    old = sign_in(client, org.apikey)
    client.post("/console/sign-out", data={"csrf": old})
    sign_in(client, org.apikey)
    stale = client.post(f"/console/profiles/{ucid}/erase", data={"csrf": old, "confirm": ucid})
    _page(stale, 403, "this form is out of date")
    assert client.get(f"/console/profiles/{ucid}").status_code == 200


def test_forged_forms_are_refused(client: TestClient, org: OrgFixture) -> None:
    ucid = _person(client, org)
    csrf = sign_in(client, org.apikey)
    no_token = client.post(f"/console/profiles/{ucid}/erase", data={"confirm": ucid})
    _page(no_token, 403, "csrf: this form is out of date")
    other_site = client.post(
        f"/console/profiles/{ucid}/erase",
        data={"csrf": csrf, "confirm": ucid},
        headers={"Origin": "https://attacker.example"},
    )
    _page(other_site, 403, "sent from another site")
    as_json = client.post(f"/console/profiles/{ucid}/erase", json={"csrf": csrf, "confirm": ucid})
    _page(as_json, 415, "the console takes its own forms only")
    gzipped = client.post(
        f"/console/profiles/{ucid}/erase",
        content=gzip.compress(urlencode({"csrf": csrf, "confirm": ucid}).encode()),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Content-Encoding": "gzip"},
    )
    _page(gzipped, 415, "Content-Encoding: the body must be sent uncompressed")
    assert gzipped.headers["Accept-Encoding"] == "identity"
    assert client.get(f"/console/profiles/{ucid}").status_code == 200
    # A sign-in form without the cookie it came with (made on another site) is refused too.
    client.cookies.clear()
    forged = client.post("/console/sign-in", data={"credential": org.apikey, "csrf": "guessed"})
    _page(forged, 403, "sign-in form is out of date")


def test_erase_needs_the_typed_ucid_and_the_delete_scope(
    client: TestClient, app: FastAPI, org: OrgFixture
) -> None:
    ucid = _person(client, org)
    reader = app.state.db.write(
        lambda c: create_credential(c, org.org_id, CredentialKind.APIKEY, "profile.read")
    )
    csrf = sign_in(client, reader.secret)
    assert "Erase…" not in client.get(f"/console/profiles/{ucid}").text
    refused = client.post(f"/console/profiles/{ucid}/erase", data={"csrf": csrf, "confirm": ucid})
    _page(refused, 403, "this needs scope profile.delete")
    csrf = sign_in(client, org.apikey)
    form = client.get(f"/console/profiles/{ucid}/erase").text
    assert "(no CRM person is linked to it)" in form
    # A person nothing was merged into: no "the 0 profiles merged into it".
    assert "This erases the profile and every id it holds" in form and "the 0 profiles" not in form
    mistyped = client.post(f"/console/profiles/{ucid}/erase", data={"csrf": csrf, "confirm": ucid[:-1]})
    _page(mistyped, 400, f"confirm: type the ucid {ucid} exactly")
    assert client.get(f"/console/profiles/{ucid}").status_code == 200


def test_signing_out_or_revoking_the_key_ends_the_session(
    client: TestClient, app: FastAPI, org: OrgFixture
) -> None:
    csrf = sign_in(client, org.apikey)
    cookie = client.cookies["profilehub_console"]
    out = client.post("/console/sign-out", data={"csrf": csrf})
    assert "You have signed out." in out.text
    client.cookies.set("profilehub_console", cookie, path="/console")
    back = client.get("/console/search", follow_redirects=False)
    assert back.status_code == 303 and back.headers["location"] == "/console/sign-in"
    _page(client.post("/console/search", data={"csrf": csrf, "q": "a@b.co"}), 401, "session has ended")

    sign_in(client, org.apikey)
    assert client.get("/console/search").status_code == 200
    prefix = org.apikey[: len("phk_1234_") + 6]
    app.state.db.write(lambda c: revoke_credential(c, org.org_id, prefix))
    assert client.get("/console/search", follow_redirects=False).status_code == 303


def test_a_crm_token_sees_crm_pages_but_not_profiles(client: TestClient, org: OrgFixture) -> None:
    ucid = _person(client, org)
    client.put(
        "/v2/crm/people?matchingAttribute=email",
        json={"firstName": "Grace", "lastName": "Hopper", "emails": ["grace@example.org"]},
        headers=org.bearer,
    )
    sign_in(client, org.token)
    people = client.get("/console/people")
    assert people.status_code == 200 and "Grace Hopper" in people.text
    _page(client.get(f"/console/profiles/{ucid}"), 403, "this needs scope profile.read")
    _page(client.get("/console/people?page=0"), 400, "page: pages start at 1")
    _page(client.get("/console/people/not-an-id"), 404, "no person")


@pytest.mark.parametrize("page", ["1000001", "9223372036854775807", "99999999999999999999999"])
@pytest.mark.parametrize("listing", ["people", "companies"])
def test_a_page_number_too_large_is_a_400_naming_page(
    client: TestClient, org: OrgFixture, listing: str, page: str
) -> None:
    sign_in(client, org.token)
    _page(client.get(f"/console/{listing}?page={page}"), 400, "page: pages go up to 1000000 at most")


def test_a_page_past_the_end_opens_the_last_page(client: TestClient, org: OrgFixture) -> None:
    for n in range(27):
        made = client.put(
            "/v2/crm/people?matchingAttribute=email",
            json={"firstName": f"P{n:02d}", "emails": [f"p{n}@example.org"]},
            headers=org.bearer,
        )
        assert made.status_code in (200, 201), made.text
    sign_in(client, org.token)
    past = client.get("/console/people?page=5&q=", follow_redirects=False)
    assert past.status_code == 303 and past.headers["location"] == "/console/people?page=2&q="
    last = client.get("/console/people?page=5")
    assert "27 in all · page 2 of 2" in last.text and "No people" not in last.text
    assert "P26" in last.text and 'href="?page=1&amp;q="' in last.text
    filtered = client.get("/console/people?page=3&q=p25")
    assert "1 in all" in filtered.text and "P25" in filtered.text
    empty = client.get("/console/companies?page=4", follow_redirects=False)
    assert empty.headers["location"] == "/console/companies?page=1&q="


@pytest.mark.parametrize(
    ("typed", "words"),
    [("ada", "not an email address, a phone number"), ("", "type an email address")],
)
def test_search_input_that_names_nothing(client: TestClient, org: OrgFixture, typed: str, words: str) -> None:
    csrf = sign_in(client, org.apikey)
    _page(client.post("/console/search", data={"csrf": csrf, "q": typed}), 400, words)
    unknown = client.post("/console/search", data={"csrf": csrf, "q": "x", "id_type": "shoe_size"})
    _page(unknown, 400, "unknown idType or namespace 'shoe_size'")


def test_search_by_raw_phone_and_a_merged_away_ucid(client: TestClient, org: OrgFixture) -> None:
    cdp = Cdp(client, org)
    first = cdp.write({"cellphone": "+44 20 7946 0958"}, {"profile": {"first_name": "Alan"}}, region="UK")
    second = cdp.write({"crm_id": "c-77"}, {"profile": {"last_name": "Turing"}}, region="UK")
    cdp.write({"cellphone": "+442079460958", "crm_id": "c-77"}, {"profile": {}}, region="UK")
    csrf = sign_in(client, org.apikey)
    found = client.post("/console/search", data={"csrf": csrf, "q": "+44 (0)20 7946 0958"})
    assert found.status_code == 200 and f"/console/profiles/{first['ucid']}" in found.text
    by_id = client.post("/console/search", data={"csrf": csrf, "q": "c-77", "id_type": "crm_id"})
    assert f"/console/profiles/{first['ucid']}" in by_id.text
    merged_away = client.get(f"/console/profiles/{second['ucid']}")
    assert merged_away.status_code == 200
    assert f"ucid {second['ucid']} was merged into this person." in merged_away.text
    assert "Turing" in merged_away.text and "Linked ucids (1)" in merged_away.text


def test_blocking_a_value_from_the_org_page(client: TestClient, app: FastAPI, org: OrgFixture) -> None:
    csrf = sign_in(client, org.apikey)
    blocked = client.post(
        "/console/admin/blocked", data={"csrf": csrf, "value": "Test@Example.com", "id_type": "email"}
    )
    row = '<td class="mono">test@example.com</td>'
    assert blocked.status_code == 200 and row in blocked.text
    said = "Blocked “test@example.com” (idType email): it is never used to match."
    assert said in blocked.text
    assert said not in client.get("/console/admin").text  # said once
    written = client.post(
        "/cdp/v1/users",
        json={"orgId": org.org_id, "region": "EU", "ids": {"email": "test@example.com"}, "upsert": {}},
        headers=org.headers(),
    )
    assert written.status_code == 400, written.text  # the only id is blocked: nothing to match on
    unblock = {"csrf": csrf, "action": "unblock", "value": "test@example.com", "id_type": "email"}
    asked = client.post("/console/admin/blocked", data=unblock)
    assert "Unblock a value?" in asked.text and 'name="confirm" value="yes"' in asked.text
    assert row in client.get("/console/admin").text  # not yet
    unblocked = client.post("/console/admin/blocked", data=unblock | {"confirm": "yes"})
    assert "Unblocked “test@example.com” (idType email)" in unblocked.text and row not in unblocked.text
    again = client.post("/console/admin/blocked", data=unblock | {"confirm": "yes"})
    assert "“test@example.com” (idType email) was not blocked; nothing changed." in again.text
    too_long = client.post("/console/admin/blocked", data={"csrf": csrf, "value": "x" * 3000})
    _page(too_long, 400, "value: an id value is at most 512 characters; this is 3000")
    assert "x" * 3000 not in client.get("/console/admin").text
    reader = app.state.db.write(
        lambda c: create_credential(c, org.org_id, CredentialKind.APIKEY, "profile.read")
    )
    csrf = sign_in(client, reader.secret)
    refused = client.post("/console/admin/blocked", data={"csrf": csrf, "value": "x@example.com"})
    _page(refused, 403, "this needs scope profile.write")


def test_an_unknown_block_action_blocks_nothing(client: TestClient, org: OrgFixture) -> None:
    # Only the org page's two forms post here: another action (a mistyped "Unblock") must not
    # fall through to blocking the value.
    csrf = sign_in(client, org.apikey)
    refused = client.post(
        "/console/admin/blocked", data={"csrf": csrf, "action": "Unblock", "value": "x@example.com"}
    )
    _page(refused, 400, "action")
    assert "x@example.com" not in client.get("/console/admin").text


def test_odd_requests_get_pages_not_errors(client: TestClient, org: OrgFixture) -> None:
    sign_in(client, org.apikey)
    _page(client.get("/console/people?page=abc"), 400, "page")
    _page(client.get("/console/no-such-page"), 404, "no console page")
    assert client.get("/console/", follow_redirects=False).headers["location"] == "/console"
    assert client.get("/console/static/vendor/cytoscape-3.35.0.LICENSE").text.startswith("Copyright")


def test_a_malformed_page_number_keeps_the_session_top_bar(client: TestClient, org: OrgFixture) -> None:
    # FastAPI checks the query before the route reads its session: the error page must still
    # show who is signed in and the way out, not a "Sign in" link as if the session had ended.
    sign_in(client, org.token)
    for address in ("/console/people?page=abc", "/console/companies?page=", "/console/companies/x?page=2.5"):
        refused = client.get(address)
        _page(refused, 400, "page")
        assert f"org {org.org_id}" in refused.text and "Sign out" in refused.text, refused.text
    client.post("/console/sign-out", data={"csrf": csrf_of(client.get("/console/people"))})
    # Signed out, the same address asks to sign in, as any other console page does.
    gone = client.get("/console/people?page=abc", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == "/console/sign-in"


def test_an_expired_session_signs_in_again(client: TestClient, app: FastAPI, org: OrgFixture) -> None:
    sign_in(client, org.apikey)
    assert client.get("/console/admin").status_code == 200
    app.state.db.write(lambda c: c.execute(console_sessions.update().values(expires_ts=now_ms() - 1)))
    gone = client.get("/console/admin", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == "/console/sign-in"


def test_explain_a_write_shows_the_merge_and_writes_nothing(client: TestClient, org: OrgFixture) -> None:
    cdp = Cdp(client, org)
    first = cdp.write({"email": "ada@example.org"}, {"profile": {"first_name": "Ada"}})
    second = cdp.write({"ga_clientid": "GA1.2.7.1700000000"}, {"profile": {"visits": 3}})
    csrf = sign_in(client, org.apikey)
    form = {"csrf": csrf, "region": "EU", "id_type_1": "email", "value_1": " Ada@Example.org "}
    form |= {"id_type_2": "ga_clientid", "value_2": "GA1.2.7.1700000000"}
    answer = client.post("/console/explain", data=form)
    assert answer.status_code == 200, answer.text
    assert f'land on <a href="/console/profiles/{first["ucid"]}">' in answer.text
    assert "merge 1 profile into it" in answer.text and "merged in" in answer.text
    assert client.get(f"/console/profiles/{second['ucid']}").text.count("Linked ucids (0)") == 1
    missing = client.post("/console/explain", data={"csrf": csrf, "region": "EU", "value_1": "x"})
    _page(missing, 400, "id_type_1: choose the idType")
    empty = client.post(
        "/console/explain", data={"csrf": csrf, "region": "EU", "id_type_2": "email", "value_2": " "}
    )
    _page(empty, 400, "value_2: the email value is empty")
    nothing = client.post("/console/explain", data={"csrf": csrf, "region": "EU"})
    _page(nothing, 400, "ids: a write needs a usable id or a ucid")


def test_a_crm_person_and_its_profile_link_to_each_other(client: TestClient, org: OrgFixture) -> None:
    made = client.put(
        "/v2/crm/people?matchingAttribute=email",
        json={"firstName": "Grace", "lastName": "Hopper", "emails": ["grace@example.org"]},
        headers=org.bearer,
    )
    person = made.json()["person"]
    assert person["ucid"], made.text
    sign_in(client, org.token)
    page = client.get(f"/console/people/{person['id']}")
    assert f"<code>{person['ucid']}</code>" in page.text and "granted profile.read to open it" in page.text
    # Times read as on the CDP pages ("2026-12-03 07:54:06 UTC"), the ISO value on hover.
    created = datetime.fromisoformat(person["createdAt"]).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert f'created <span title="{person["createdAt"]}">{created}</span>' in page.text
    listed = client.get("/console/people").text
    assert f'<td title="{person["updatedAt"]}">' in listed and f">{person['updatedAt']}<" not in listed
    csrf = sign_in(client, org.apikey)
    found = client.post("/console/search", data={"csrf": csrf, "q": "GRACE@example.org"})
    assert f"/console/profiles/{person['ucid']}" in found.text
    profile = client.get(f"/console/profiles/{person['ucid']}")
    assert "crm_person_id" in profile.text and person["id"] in profile.text
    warning = client.get(f"/console/profiles/{person['ucid']}/erase").text
    assert "and deletes the <strong>1 linked CRM person</strong>" in warning
    erased = client.post(
        f"/console/profiles/{person['ucid']}/erase", data={"csrf": csrf, "confirm": person["ucid"]}
    )
    assert "and 1 linked CRM person" in erased.text
    receipt_id = re.search(r'id="receipt">Receipt <code>([0-9a-f-]{36})</code>', erased.text)
    assert receipt_id, erased.text
    receipt = client.get(
        f"/cdp/v1/erasures/{receipt_id.group(1)}", params={"orgId": org.org_id}, headers=org.headers()
    )
    assert receipt.status_code == 200 and receipt.json()["ucids"] == [person["ucid"]], receipt.text
    assert client.get(f"/v2/crm/people/{person['id']}", headers=org.bearer).status_code == 404


def test_the_org_page_shows_webhooks_and_their_state(
    client: TestClient, app: FastAPI, org: OrgFixture
) -> None:
    db = app.state.db
    # Loopback addresses nothing listens on: the test sends nothing anywhere.
    kept = db.write(lambda c: create_endpoint(c, org.org_id, "http://127.0.0.1:9/kept", ["profile.merged"]))
    paused = db.write(lambda c: create_endpoint(c, org.org_id, "http://127.0.0.1:9/paused"))
    db.write(lambda c: set_enabled(c, paused.endpoint.endpoint_id, False))
    sign_in(client, org.apikey)
    page = client.get("/console/admin").text
    rows = {
        e.endpoint_id: page.split(f">{e.endpoint_id}<", 1)[1].split("</tr>", 1)[0]
        for e in (kept.endpoint, paused.endpoint)
    }
    assert "http://127.0.0.1:9/kept" in rows[kept.endpoint.endpoint_id]
    assert (
        "profile.merged" in rows[kept.endpoint.endpoint_id] and "enabled" in rows[kept.endpoint.endpoint_id]
    )
    assert (
        "<td>disabled " in rows[paused.endpoint.endpoint_id] and ">all<" in rows[paused.endpoint.endpoint_id]
    )
    assert kept.secret not in page


def test_unmerge_brings_a_profile_back_under_its_own_ucid(
    client: TestClient, app: FastAPI, org: OrgFixture
) -> None:
    person = merged_person(client, org.apikey, org.org_id, merged=2, email="ada@example.org")
    linked = person["ids"]["linkedUcid"]
    assert len(linked) == 2
    csrf = sign_in(client, org.apikey)
    form = client.get(f"/console/profiles/{person['ucid']}/unmerge")
    assert 'value="ga_clientid=GA1.2.p1.1700000000"' in form.text
    done = client.post(
        f"/console/profiles/{person['ucid']}/unmerge",
        data={"csrf": csrf, "id": "ga_clientid=GA1.2.p1.1700000000"},
    )
    assert done.status_code == 200, done.text
    assert "The person is now 2 profiles" in done.text and f"/console/profiles/{linked[0]}" in done.text
    assert "Linked ucids (1)" in client.get(f"/console/profiles/{person['ucid']}").text
    _page(
        client.post(f"/console/profiles/{person['ucid']}/unmerge", data={"csrf": csrf}),
        400,
        "ids: tick at least",
    )
    not_there = client.post(
        f"/console/profiles/{person['ucid']}/unmerge",
        data={"csrf": csrf, "extra_type": "fpuid", "extra_value": "never-seen"},
    )
    _page(not_there, 400, "not on profile")
    reader = app.state.db.write(
        lambda c: create_credential(c, org.org_id, CredentialKind.APIKEY, "profile.read")
    )
    csrf = sign_in(client, reader.secret)
    refused = client.post(
        f"/console/profiles/{person['ucid']}/unmerge",
        data={"csrf": csrf, "id": "ga_clientid=GA1.2.p2.1700000000"},
    )
    _page(refused, 403, "this needs scope profile.write")


def test_unmerging_one_hash_of_a_phone_says_nothing_was_split(client: TestClient, org: OrgFixture) -> None:
    cdp = Cdp(client, org)
    first = cdp.write({"cellphone": "+44 20 7946 0958"}, {"profile": {"first_name": "Alan"}}, region="UK")
    cdp.write({"crm_id": "c-77"}, {"profile": {"last_name": "Turing"}}, region="UK")
    cdp.write({"cellphone": "+442079460958", "crm_id": "c-77"}, {"profile": {}}, region="UK")
    csrf = sign_in(client, org.apikey)
    form = client.get(f"/console/profiles/{first['ucid']}/unmerge").text
    assert "tick all the ids of one value" in form
    one_hash = re.search(r'value="(cellphone_number_e164_sha256=[0-9a-f]+)"', form)
    assert one_hash, form
    done = client.post(
        f"/console/profiles/{first['ucid']}/unmerge", data={"csrf": csrf, "id": one_hash.group(1)}
    )
    assert done.status_code == 200, done.text
    assert "Nothing was split" in done.text and "The person is now" not in done.text
    assert "still one profile with the same 1 merged in" in done.text
    assert "tick every id of that value" in done.text
    # The rebuild gave the person as it was: nothing is recorded (no unmerge in its history).
    assert "Nothing was changed or recorded" in done.text
    history = client.get(f"/console/profiles/{first['ucid']}").text.split('id="history"', 1)[1]
    assert "unmerge" not in history.split('id="consent-ledger"', 1)[0]
    assert "Linked ucids (1)" in client.get(f"/console/profiles/{first['ucid']}").text


def test_a_company_page_lists_the_people_linked_to_it(client: TestClient, org: OrgFixture) -> None:
    def company(body: dict[str, str]) -> str:
        made = client.post("/v2/crm/companies", json=body, headers=org.bearer)
        assert made.status_code in (200, 201), made.text
        return str(made.json()["company"]["id"])

    def person(first: str, email: str, company_id: str | None = None) -> None:
        body: dict[str, object] = {"firstName": first, "emails": [email]}
        if company_id:
            body["companyId"] = company_id
        made = client.put("/v2/crm/people?matchingAttribute=email", json=body, headers=org.bearer)
        assert made.status_code in (200, 201), made.text

    acme = company({"name": "Acme", "domain": "acme.example"})
    bare = company({"name": "No Domain Ltd"})
    # Linked by companyId with an email elsewhere: a search by the domain misses her.
    person("Linked", "linked@gmail.example", acme)
    person("Stranger", "stranger@acme.example")  # the domain's email, not linked
    for n in range(26):
        person(f"Staff{n:02d}", f"staff{n}@elsewhere.example", bare)
    sign_in(client, org.token)
    page = client.get(f"/console/companies/{acme}").text
    assert "People at this company" in page, page
    listed = page.split('id="company-people"', 1)[1].split("</table>", 1)[0]
    assert "Linked" in listed and "Stranger" not in listed
    assert "1 in all" in page
    assert 'href="/console/people?q=%40acme.example">Search people by email domain @acme.example' in page
    # No domain: no link that would search for "" (which lists everyone); the 26 page like the list.
    first = client.get(f"/console/companies/{bare}").text
    assert "/console/people?q=" not in first and "Search people by email domain" not in first
    assert "26 in all · page 1 of 2" in first and "Staff00" in first and "Staff25" not in first
    assert "Linked" not in first.split('id="company-people"', 1)[1]
    second = client.get(f"/console/companies/{bare}?page=2")
    assert "page 2 of 2" in second.text and "Staff25" in second.text
    past = client.get(f"/console/companies/{bare}?page=9", follow_redirects=False)
    assert past.status_code == 303 and past.headers["location"] == f"/console/companies/{bare}?page=2"
    _page(client.get(f"/console/companies/{bare}?page=0"), 400, "page: pages start at 1")


def _said(response: httpx.Response) -> str:
    """The result card's words, tags out (what a person reads)."""
    assert response.status_code == 200, response.text
    card = response.text.split("found</h2>", 1)[1].split("</section>", 1)[0]
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", card)).split())


def test_search_says_how_it_read_the_input(client: TestClient, app: FastAPI, org: OrgFixture) -> None:
    cdp = Cdp(client, org)
    adid = "6d92078a-8246-4ba4-ae5b-76104861e7dc"
    held = cdp.write({"AdId": adid}, {"profile": {"first_name": "Ad"}})
    phoned = cdp.write({"cellphone": "+44 20 7946 0958"}, {"profile": {}}, region="UK")
    csrf = sign_in(client, org.apikey)

    def search(q: str, id_type: str = "") -> str:
        return _said(client.post("/console/search", data={"csrf": csrf, "q": q, "id_type": id_type}))

    # A guessed UUID that is no ucid is searched as the org's ids too, and the page says so.
    found = search(adid)
    assert (
        f"/console/profiles/{held['ucid']}"
        in client.post("/console/search", data={"csrf": csrf, "q": adid}).text
    )
    assert "Searched as a ucid: no profile has this ucid; then as idType AdId: found." in found
    unknown = search("0b7b9d6e-3f0a-4c4e-9d51-2b1f2f6c9a10")
    assert "as a ucid: no profile has this ucid; then as each of the org's ids (AdId," in unknown
    assert "no profile holds it either" in unknown
    assert "Searched as a ucid." in search(held["ucid"])
    assert "Searched as an email address ada@example.org (its hashes)." in search(" Ada@Example.org ")
    # No country code: UK gives one (+44), EU does not; the page says both.
    phone = search("020 7946 0958")
    assert "in region UK: as a phone number +442079460958 (its hashes)" in phone
    assert "not read in region EU: '020 7946 0958' is not a phone number in international format" in phone
    assert (
        f"/console/profiles/{phoned['ucid']}"
        in client.post("/console/search", data={"csrf": csrf, "q": "020 7946 0958"}).text
    )
    # A blocked value is not "no profile holds that id": it was never searched.
    blocked = search("null", "email")
    assert "Nothing was searched: “null” is a blocked value of idType email" in blocked
    assert "No profile holds that id" not in blocked
    # An org whose only region gives no country code cannot read the number at all.
    eu_only = make_org(app.state.db, org_id=77, regions=("EU",))
    csrf = sign_in(client, eu_only.apikey)
    nowhere = search("020 7946 0958")
    assert "Nothing was searched: '020 7946 0958' is not a phone number in international format" in nowhere
    assert "No profile holds that id" not in nowhere


def _form_again(response: httpx.Response, status: int, form_id: str, words: str, *kept: str) -> None:
    """The refused form itself again (not an error page), what was typed in it, the error beside it."""
    _page(response, status, words)
    assert form_id in response.text and 'class="card error"' not in response.text, response.text
    for html_text in kept:
        assert html_text in response.text, (html_text, response.text)


def test_a_refused_form_comes_back_with_what_was_typed(
    client: TestClient, app: FastAPI, org: OrgFixture
) -> None:
    person = merged_person(client, org.apikey, org.org_id, merged=1, email="ada@example.org")
    ucid = person["ucid"]
    csrf = sign_in(client, org.apikey)

    erase = client.post(f"/console/profiles/{ucid}/erase", data={"csrf": csrf, "confirm": ucid[:-1]})
    _form_again(
        erase,
        400,
        'id="erase-form"',
        f"confirm: type the ucid {ucid}",
        f'value="{ucid[:-1]}"',
        'aria-invalid="true"',
    )
    search = client.post("/console/search", data={"csrf": csrf, "q": "ada", "id_type": ""})
    _form_again(search, 400, 'action="/console/search"', "not an email address", 'value="ada"')
    unknown = client.post("/console/search", data={"csrf": csrf, "q": "x", "id_type": "shoe_size"})
    _form_again(unknown, 400, 'action="/console/search"', "unknown idType", 'name="q" value="x"')

    explain = {"csrf": csrf, "region": "EU", "ucid": "", "id_type_1": "", "value_1": "kept@example.org"}
    explained = client.post("/console/explain", data=explain | {"id_type_2": "fpuid", "value_2": "f-9"})
    _form_again(
        explained,
        400,
        'id="explain-form"',
        "id_type_1: choose the idType",
        'name="value_1" value="kept@example.org"',
        '<option value="fpuid" selected>fpuid</option>',
    )

    ticked = "ga_clientid=GA1.2.p1.1700000000"
    unmerge = {"csrf": csrf, "id": ticked, "extra_type": "fpuid", "extra_value": "never-seen"}
    unmerged = client.post(f"/console/profiles/{ucid}/unmerge", data=unmerge)
    _form_again(
        unmerged,
        400,
        'id="unmerge-form"',
        "not on profile",
        f'value="{ticked}" aria-label="unlink ga_clientid GA1.2.p1.1700000000" checked',
        '<option value="fpuid" selected>fpuid</option>',
        'name="extra_value" value="never-seen"',
    )
    assert "Linked ucids (1)" in client.get(f"/console/profiles/{ucid}").text  # nothing was unmerged

    blocked = client.post(
        "/console/admin/blocked", data={"csrf": csrf, "value": "x" * 513, "id_type": "email"}
    )
    _form_again(
        blocked,
        400,
        'action="/console/admin/blocked"',
        "value: an id value is at most 512",
        f'value="{"x" * 513}"',
    )
    assert 'name="id_type" value="email"' in blocked.text

    # A wrong key: the sign-in form again with the error beside the box, the key never written back.
    form = client.get("/console/sign-in")
    wrong = client.post("/console/sign-in", data={"credential": org.apikey + "x", "csrf": csrf_of(form)})
    _form_again(
        wrong, 401, 'action="/console/sign-in"', "unknown or revoked credential", 'aria-invalid="true"'
    )
    assert org.apikey not in wrong.text


def test_an_address_typed_for_signing_out_asks_to_sign_out(client: TestClient, org: OrgFixture) -> None:
    # Signed out (or never in), a typed or bookmarked /console/sign-out goes to the sign-in form.
    gone = client.get("/console/sign-out", follow_redirects=False)
    assert gone.status_code == 303 and gone.headers["location"] == "/console/sign-in"
    sign_in(client, org.apikey)
    # Signed in, it is a page with the button: a GET does not sign out (a link must not end it).
    page = client.get("/console/sign-out")
    assert page.status_code == 200 and 'id="sign-out"' in page.text, page.text
    assert client.get("/console/search").status_code == 200
    out = client.post("/console/sign-out", data={"csrf": csrf_of(page)})
    assert "You have signed out." in out.text
    assert client.get("/console/search", follow_redirects=False).status_code == 303


# Console routes are not in the OpenAPI document: their 405 once named the first route's method
# only (a form page said GET alone though it takes its POST), and was the API's JSON.
@pytest.mark.parametrize(
    ("method", "address", "allow"),
    [
        ("DELETE", "/console/search", "GET, HEAD, POST"),
        ("PUT", "/console/profiles/0191e5a0-7c3e-7d51-9a5e-3f1d2c4b5a69/erase", "GET, HEAD, POST"),
        ("PATCH", "/console/sign-in", "GET, HEAD, POST"),
        ("DELETE", "/console/no-such-page", "GET, HEAD"),
    ],
)
def test_a_method_a_console_address_does_not_take_is_a_page(
    client: TestClient, org: OrgFixture, method: str, address: str, allow: str
) -> None:
    sign_in(client, org.apikey)
    refused = client.request(method, address)
    _page(refused, 405, f"method: {method} is not allowed on {address}; allowed: {allow}")
    assert refused.headers["allow"] == allow
    # Still signed in: the page's bar says who, with its sign-out button (it showed no session).
    assert f"org {org.org_id}" in refused.text and 'action="/console/sign-out"' in refused.text
    # The API keeps its JSON error shape.
    api = client.request("PUT", "/cdp/v1/users/_search", headers=org.headers())
    assert api.status_code == 405 and api.json()["errors"] == {"method": "allowed: POST"}, api.text


def test_a_company_address_takes_its_id_in_any_case(client: TestClient, org: OrgFixture) -> None:
    made = client.post("/v2/crm/companies", json={"name": "Acme"}, headers=org.bearer)
    company_id = made.json()["company"]["id"]
    # A person body names its company by that id in any case, as any UUID is read.
    linked = client.put(
        "/v2/crm/people?matchingAttribute=email",
        json={"firstName": "Ada", "emails": ["ada@acme.example"], "companyId": company_id.upper()},
        headers=org.bearer,
    )
    assert linked.json()["person"]["company"]["id"] == company_id, linked.text
    sign_in(client, org.token)
    typed = client.get(f"/console/companies/{company_id.upper()}?page=1", follow_redirects=False)
    assert typed.status_code == 303, typed.text
    assert typed.headers["location"] == f"/console/companies/{company_id}?page=1"
    page = client.get(f"/console/companies/{company_id.upper()}")
    assert page.status_code == 200 and "Acme" in page.text and "Ada" in page.text, page.text
    _page(client.get("/console/companies/not-a-company"), 404, "no company not-a-company")
