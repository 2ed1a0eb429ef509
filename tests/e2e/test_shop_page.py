"""End to end: the shop page the gateway serves at ``/``, driven in a real headless Chromium.

A person's whole visit on the session's shop mesh (``shop_mesh``): open the page, log in through
identity's form (authorization code + PKCE, the page's own JavaScript doing the exchange), check
stock, place an order and watch it become CONFIRMED, place one whose payment is declined and see
it CANCELLED with the reason, read "my orders", follow the trace link to the POST's trace id;
and see problems from the gateway in words (title, detail, field violations). Searching every
customer's orders is support's (order_views' policy), so a customer's page does not offer it.

The browser is Debian's chromium driven by Playwright (no ``playwright install``). Without
/usr/bin/chromium the module is skipped, except under CI, where that is a failure. The last
screen is saved to ``test-artifacts/shop-page.png`` at the repository root (and to the test's
tmp dir), pass or fail, so a person can look at what the test saw.

Stock is set with gRPC straight to inventory, with an admin's token the mesh's identity mints:
the gateway's stock-write route is rate limited tightly in the tests (3 a minute, for its own 429
test).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import requests
from playwright.sync_api import Browser, ConsoleMessage, Page, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from support.browser import chromium, require_chromium
from support.gateway import Shop
from support.mesh import mesh_tokens

from shop.inventory.v1 import inventory_pb2, inventory_pb2_grpc

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
ARTIFACT = REPO / "test-artifacts" / "shop-page.png"
# The saga takes a few hundred milliseconds on an idle machine; a loaded CI runner is slower.
SAGA_TIMEOUT_MS = 60_000
STEP_TIMEOUT_MS = 15_000
TRACE_ID = re.compile(r"[0-9a-f]{32}")

require_chromium("the shop page's browser test")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium for this module (Debian's, not a Playwright download). Module-scoped:
    Playwright's sync API holds an event loop on the main thread while it runs, and the tests
    after this module (asyncio.run in the runner's) need it gone."""
    with chromium() as browser:
        yield browser


def set_stock(shop: Shop, sku: str, quantity: int) -> None:
    """SetStock over gRPC, as an admin (the only role inventory's policy lets set stock)."""
    with grpc.insecure_channel(f"127.0.0.1:{shop.ports['inventory']}") as channel:
        inventory_pb2_grpc.InventoryServiceStub(channel).SetStock(
            inventory_pb2.SetStockRequest(sku=sku, quantity=quantity),
            timeout=10,
            metadata=mesh_tokens(shop.root).metadata("admin"),
        )


def place_order(page: Page, *, payment_token: str, country: str = "DE") -> tuple[str, str]:
    """Submits the order form as it stands (with ``payment_token`` and ``country``); the new
    order's id and the X-Trace-Id of the POST that placed it."""
    page.fill("#payment-token", payment_token)
    page.fill("#country", country)
    with page.expect_response(
        lambda r: r.url.endswith("/v1/orders") and r.request.method == "POST"
    ) as posted:
        page.click("#place")
    response = posted.value
    assert response.status == 200, response.text()
    return str(response.json()["orderId"]), response.headers.get("x-trace-id", "")


def save_screenshot(page: Page, tmp_path: Path) -> None:
    """The page as it is now, to test-artifacts/ (CI keeps it) and to the test's tmp dir."""
    ARTIFACT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACT), full_page=True)
    page.screenshot(path=str(tmp_path / "shop-page.png"), full_page=True)


def test_a_customer_logs_in_orders_and_follows_the_trace(
    browser: Browser, shop_mesh: Shop, tmp_path: Path
) -> None:
    shop = shop_mesh
    ARTIFACT.unlink(missing_ok=True)  # this run's, not an earlier run's
    tag = uuid.uuid4().hex[:8]
    sku = f"mug-{tag}"
    set_stock(shop, sku, 10)
    email, password, _token = shop.customer()
    config = requests.get(f"{shop.gateway}/config.json", timeout=10).json()
    assert config["client_id"] == "shop-web"

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(STEP_TIMEOUT_MS)
    page = context.new_page()
    page_errors: list[str] = []
    policy_violations: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            policy_violations.append(message.text)

    page.on("console", on_console)
    finished = False

    try:
        # --- log in: the page sends the browser to identity, identity's form, and back ---------
        page.goto(f"{shop.gateway}/")
        expect(page.locator("body")).to_have_attribute("data-ready", "true")
        expect(page.locator("#who")).to_have_text("Not signed in.")
        expect(page.locator("#place")).to_be_disabled()
        page.click("#login")
        page.wait_for_url(f"{shop.identity.issuer}/authorize?**")
        assert "code_challenge_method=S256" in page.url
        page.fill("#username", email)
        page.fill("#password", password)
        page.click("button[type=submit]")
        try:
            page.wait_for_url(f"{shop.gateway}/**")
        except PlaywrightTimeout:
            # Seen when identity's login page says form-action 'self' only: Chromium applies
            # form-action to every redirect after the POST, so the hop back to the gateway's
            # origin is blocked and the browser stays on identity.
            pytest.fail(
                f"identity did not send the browser back to the page (at {page.url});"
                f" policy violations: {policy_violations}",
                pytrace=False,
            )
        expect(page.locator("body")).to_have_attribute("data-signed-in", "true")
        expect(page.locator("#who")).to_contain_text("Signed in")
        expect(page.locator("#error")).to_be_hidden()
        # The code and state are gone from the address bar, the verifier from storage.
        assert page.url == f"{shop.gateway}/"
        assert page.evaluate("sessionStorage.getItem('shop.pkce')") is None

        # --- stock, and a problem shown in words ------------------------------------------------
        page.fill("#stock-sku", sku)
        page.click("#check-stock")
        expect(page.locator("#stock")).to_have_text(f"{sku}: 10 available")
        page.fill("#stock-sku", f"no-such-{tag}")
        page.click("#check-stock")
        expect(page.locator("#error")).to_be_visible()
        expect(page.locator("#error")).to_contain_text("Not Found")

        # --- an order that goes through -----------------------------------------------------------
        page.fill("#sku", sku)
        page.fill("#quantity", "2")
        page.fill("#price", "12.30")
        page.fill("#name", f"Ada {tag}")
        page.fill("#line1", "Unter den Linden 1")
        page.fill("#city", "Berlin")
        page.fill("#postal-code", "10117")
        confirmed, confirmed_trace = place_order(page, payment_token="tok_visa")
        expect(page.locator("#error")).to_be_hidden()
        status = page.locator("#status")
        expect(status).to_contain_text(confirmed)
        expect(status).to_have_attribute("data-status", "CONFIRMED", timeout=SAGA_TIMEOUT_MS)
        expect(status).to_contain_text("CONFIRMED")
        assert TRACE_ID.fullmatch(confirmed_trace), confirmed_trace
        # mesh up configures no Jaeger UI: the page names the command that opens the trace
        assert config["jaeger_url"] == ""
        expect(page.locator("#trace-link")).to_have_attribute("data-trace-id", confirmed_trace)
        expect(page.locator("#trace-link")).to_have_text(
            f"trace: mesh trace {confirmed_trace} --open"
        )

        # --- one whose payment is declined: cancelled, with the reason -----------------------
        cancelled, cancelled_trace = place_order(
            page, payment_token="tok_chargeDeclinedInsufficientFunds"
        )
        expect(status).to_contain_text(cancelled)
        expect(status).to_have_attribute("data-status", "CANCELLED", timeout=SAGA_TIMEOUT_MS)
        expect(status).to_contain_text("insufficient_funds")
        assert TRACE_ID.fullmatch(cancelled_trace) and cancelled_trace != confirmed_trace
        expect(page.locator("#trace-link")).to_have_attribute("data-trace-id", cancelled_trace)

        # --- my orders: both, in their final states, each with its trace -----------------------
        mine = page.locator("#orders")
        for order_id, word, trace_id in (
            (confirmed, "CONFIRMED", confirmed_trace),
            (cancelled, "CANCELLED", cancelled_trace),
        ):
            item = mine.locator(f"li[data-order-id='{order_id}']")
            expect(item).to_have_attribute("data-status", word)
            opener = f"mesh trace {trace_id} --open"
            expect(item.locator(".trace")).to_have_attribute("title", opener)
        expect(mine.locator(f"li[data-order-id='{cancelled}']")).to_contain_text(
            "insufficient_funds"
        )
        expect(mine.locator(f"li[data-order-id='{confirmed}']")).to_contain_text("€24.60")

        # --- searching every order is support's: a customer's page does not offer it ---------
        expect(page.locator("#search-section")).to_be_hidden()

        # --- a field the contract refuses: its violation is named ----------------------------
        page.fill("#country", "ZZ")
        page.click("#place")
        expect(page.locator("#error")).to_be_visible()
        expect(page.locator("#error")).to_contain_text("Bad Request")
        expect(page.locator("#error li")).to_contain_text(["country"])
        assert not page_errors, page_errors
        assert not policy_violations, policy_violations

        # --- the page's policy, narrowed once the issuer is known: no other origin is reachable
        registry = shop.env["SCHEMA_REGISTRY_URL"]
        outcome = page.evaluate(
            "url => fetch(url).then(() => 'reached', () => 'blocked')", f"{registry}/subjects"
        )
        assert outcome == "blocked", f"the page could reach {registry}"
        save_screenshot(page, tmp_path)

        # --- the session: a reload keeps it, a refused access token is refreshed, log out ends it
        page.reload()
        expect(page.locator("body")).to_have_attribute("data-signed-in", "true")
        expect(mine.locator(f"li[data-order-id='{confirmed}']")).to_be_visible()
        # What an expired access token looks like to the gateway: a 401, met by one refresh.
        page.evaluate("app.tokens.access_token = 'no.longer.valid'")
        with page.expect_response(lambda r: "/token" in r.url) as refreshed:
            page.click("#refresh-orders")
        assert refreshed.value.status == 200
        expect(mine.locator(f"li[data-order-id='{cancelled}']")).to_be_visible()
        expect(page.locator("#error")).to_be_hidden()
        page.click("#logout")
        expect(page.locator("#who")).to_have_text("Not signed in.")
        expect(page.locator("#place")).to_be_disabled()
        assert page.evaluate("sessionStorage.getItem('shop.tokens')") is None
        assert not page_errors, page_errors
        finished = True
    finally:
        if not finished:
            save_screenshot(page, tmp_path)  # what the browser showed when the test failed
        context.close()
