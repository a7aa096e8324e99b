"""Signing in to the console over HTTP, as a browser does (cookies kept by the client)."""

from __future__ import annotations

import html
import re

import httpx
from fastapi.testclient import TestClient

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found, page.text
    return found.group(1)


def sign_in(client: TestClient | httpx.Client, credential: str) -> str:
    """Sign in with ``credential``; returns the session's CSRF token."""
    form = client.get("/console/sign-in")
    assert form.status_code == 200, form.text
    done = client.post("/console/sign-in", data={"credential": credential, "csrf": csrf_of(form)})
    assert done.status_code == 200, done.text
    return csrf_of(done)


def message_of(page: httpx.Response) -> str:
    found = re.search(r'<p class="message">(.*?)</p>', page.text, re.S)
    assert found, page.text
    return html.unescape(found.group(1))
