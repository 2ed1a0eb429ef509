"""End to end: identity's pages as a browser sees them: security headers, signing out, and an
error page that names the problem in words."""

from __future__ import annotations

import html
import re
import uuid

import requests
from support.identity import Identity, register

PASSWORD = "correct horse battery staple 42"


def _hidden(page: str) -> dict[str, str]:
    return {k: html.unescape(v) for k, v in re.findall(r'name="(\w+)" value="([^"]*)"', page)}


def test_pages_forbid_framing_and_foreign_scripts(identity: Identity) -> None:
    page = requests.get(f"{identity.issuer}/login", timeout=10)
    assert page.status_code == 200
    assert page.headers["X-Frame-Options"] == "DENY"
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["Cache-Control"] == "no-store"
    csrf = page.cookies.get("identity_csrf")
    assert csrf and csrf not in page.text  # the form holds its signature, not the cookie


def test_signing_out_ends_the_session_so_the_next_authorization_asks_again(
    identity: Identity,
) -> None:
    email = f"out-{uuid.uuid4().hex[:8]}@example.com"
    register(identity, email, PASSWORD)
    browser = requests.Session()
    form = _hidden(browser.get(f"{identity.issuer}/login?next=/device", timeout=10).text)
    signed_in = browser.post(
        f"{identity.issuer}/login",
        data={**form, "username": email, "password": PASSWORD},
        allow_redirects=False,
        timeout=10,
    )
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/device"
    index = browser.get(f"{identity.issuer}/", timeout=10)
    assert "You are signed in" in index.text
    out = browser.post(
        f"{identity.issuer}/logout", data=_hidden(index.text), allow_redirects=False, timeout=10
    )
    assert out.status_code == 303
    assert "You are signed in" not in browser.get(f"{identity.issuer}/", timeout=10).text


def test_a_login_may_only_return_to_our_own_pages(identity: Identity) -> None:
    email = f"next-{uuid.uuid4().hex[:8]}@example.com"
    register(identity, email, PASSWORD)
    browser = requests.Session()
    form = _hidden(
        browser.get(f"{identity.issuer}/login?next=https://evil.example/", timeout=10).text
    )
    assert form["next"] == "/"
    signed_in = browser.post(
        f"{identity.issuer}/login",
        data={**form, "next": "//evil.example/x", "username": email, "password": PASSWORD},
        allow_redirects=False,
        timeout=10,
    )
    assert signed_in.headers["Location"] == "/"


def test_an_unknown_page_is_an_error_page_in_words(identity: Identity) -> None:
    page = requests.get(f"{identity.issuer}/nowhere", timeout=10)
    assert page.status_code == 404
    assert "That did not work" in page.text
    wrong_method = requests.get(f"{identity.issuer}/token", timeout=10)
    assert wrong_method.status_code == 405


def test_a_browser_app_of_an_allowed_origin_may_call_the_token_endpoint(
    identity: Identity,
) -> None:
    """CORS for the gateway's shop page (a public client in a page): /token and discovery only,
    never the pages."""
    shop = "http://127.0.0.1:8080"
    preflight = requests.options(
        f"{identity.issuer}/token",
        headers={"Origin": shop, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == shop
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    refused = requests.post(
        f"{identity.issuer}/token",
        data={"grant_type": "refresh_token", "client_id": "shop-web", "refresh_token": "x"},
        headers={"Origin": shop},
        timeout=10,
    )
    assert refused.status_code == 400  # an OAuth error, readable by the page's script
    assert refused.headers["Access-Control-Allow-Origin"] == shop
    stranger = requests.post(
        f"{identity.issuer}/token",
        data={"grant_type": "refresh_token", "client_id": "shop-web", "refresh_token": "x"},
        headers={"Origin": "https://evil.example"},
        timeout=10,
    )
    assert "Access-Control-Allow-Origin" not in stranger.headers
    page = requests.get(f"{identity.issuer}/login", headers={"Origin": shop}, timeout=10)
    assert "Access-Control-Allow-Origin" not in page.headers
