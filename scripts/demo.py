"""`make demo`: the mesh on embedded defaults, four orders through the saga, a device login, a
refused read and its audit record, then shutdown.

Starts the mesh with `mesh up -d` (embedded Kafka unless one is configured), stocks two SKUs,
places four orders (one confirmed, one declined, one out of stock, one unshippable), waits for
each saga to end and prints the outcomes with their reasons, the stock before and after, a
replayed request and the confirmed order's trace tree. Every call carries an access token, minted
by the mesh's identity as `mesh token` mints one: an admin's to set stock, the customer's own
(Ada's) to place and read her orders; the saga calls inventory, payments and shipping as orders,
on her behalf. Then a TV signs in with the OAuth 2 device flow (RFC 8628) against identity: the
demo plays the TV (showing the code, polling the token endpoint at the interval it was given) and
the person (typing the code into the verification page, logging in, pressing Allow), then calls
IdentityService with the access token, and the gateway introspects it (IntrospectToken is for the
mesh's services: the gateway's own client credentials). With that same token the TV places an
order through the gateway (HTTP/JSON on 8080, each call printed as the curl command a person
could run), polls it to CONFIRMED there, reads it back from the read model (read-your-writes)
and with its details, and the demo prints the POST's trace (its X-Trace-Id), whose root must be
the gateway's span. Then the TV's person asks for Ada's order, over gRPC and through the gateway:
PERMISSION_DENIED and 403, and the denial turns up in the audit trail (`mesh audit ls`, with an
auditor's token), which verifies (`mesh audit verify`).
Then the control plane: `mesh config set orders max_lines_per_order=1` takes effect in the running
orders service (a 2-line order is refused, naming the namespace and version; set back, it goes
through), the feature flag checkout.express-shipping is evaluated for two customers as shipping
would (`mesh flags eval`), and the checkout experiment's report is printed over simulated traffic
(`mesh experiments simulate`, then `mesh experiments report`).
Last come the commands to try, and the mesh is stopped (unless it was running before the demo,
in which case it is left as it was found). Exits 1 when an order did not end as its scenario
says, the login did not give a working token, the order through the gateway did not confirm
under a trace rooted at the gateway, the refused read was not refused, audited and verified, or the
live config change did not take effect (or the experiment's report did not count the traffic),
so CI catches a broken flow.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import grpc
import requests

from mesh_runner.token import mint
from meshkit import DEFAULT_TIMEOUT, address_of, connect
from meshkit.addresses import http_url_of
from meshkit.credentials import StaticCredentials
from schema_registry.client import RegistryClient
from shop.common.v1 import common_pb2 as common_pb
from shop.identity.v1 import identity_pb2 as identity_pb
from shop.identity.v1 import identity_pb2_grpc as identity_grpc
from shop.inventory.v1 import inventory_pb2 as inv_pb
from shop.inventory.v1 import inventory_pb2_grpc as inv_grpc
from shop.orders.v1 import orders_pb2 as orders_pb
from shop.orders.v1 import orders_pb2_grpc as orders_grpc

ROOT = Path(__file__).resolve().parent.parent
MESH = str(Path(sys.executable).parent / "mesh")
# Addresses from the mesh's one source of ports (mesh.toml), by service name.
_MESH_ENV = {"MESH_CONFIG": str(ROOT / "mesh.toml")}
ORDERS = address_of("orders", _MESH_ENV)
INVENTORY = address_of("inventory", _MESH_ENV)
IDENTITY = address_of("identity", _MESH_ENV)
# Identity's HTTP side: the OAuth issuer, whose discovery document names every endpoint.
ISSUER = http_url_of("identity", _MESH_ENV)
# The gateway's HTTP/JSON edge, in front of the gRPC services.
GATEWAY = http_url_of("gateway", _MESH_ENV)
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
# Registering and signing in hash a password with argon2id, slow by design (64 MiB, 3 passes):
# a busy machine can take longer than DEFAULT_TIMEOUT for it.
HASHING_TIMEOUT = 30.0
REGISTRY = "http://127.0.0.1:8081"
CUSTOMER = "cust-ada"  # the customer of the four orders: her token's subject
# IntrospectToken is for the mesh's services (resource servers); the demo asks as the gateway.
GATEWAY_CLIENT = ("gateway", os.environ.get("GATEWAY_CLIENT_SECRET", "dev-gateway-secret"))
AUDIT_WAIT_S = 60.0  # the denial's record travels orders' outbox, Kafka and the audit service
# A config version reaches the services in milliseconds; the wait is for a loaded machine.
APPLIED_WAIT_S = 30.0
# The simulated traffic of the checkout experiment: its events travel Kafka to control's report.
SIMULATED_UNITS = 2000
REPORT_WAIT_S = 60.0
# Two customers on either side of checkout.express-shipping's 20 % rollout in DE.
FLAG_CUSTOMERS = (("cust-ada", "DE"), ("cust-katherine", "DE"))
# A Jaeger with its UI (compose's jaeger image, say) at this URL: the demo links the traces
# there too. The Jaeger `make tools` builds has no UI (a placeholder page): no link then.
JAEGER_UI = os.environ.get("MESH_JAEGER_UI_URL", "").strip().rstrip("/")
# Where `mesh trace` reads: Jaeger's API when the mesh exports there, else the local store.
EXPORTS_ELSEWHERE = any(
    os.environ.get(key, "").strip()
    for key in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
)
TRACE_SOURCE = ("--jaeger", JAEGER_UI) if JAEGER_UI and EXPORTS_ELSEWHERE else ()
BOLD, DIM, GREEN, RED, RESET = "\033[1m", "\033[2m", "\033[32m", "\033[31m", "\033[0m"
if not sys.stdout.isatty():
    BOLD = DIM = GREEN = RED = RESET = ""


def heading(text: str) -> None:
    print(f"\n{BOLD}{text}{RESET}")


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token``."""
    return (("authorization", f"Bearer {token}"),)


def mesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MESH, "--root", str(ROOT), *args], text=True, check=False)


def running_before() -> bool:
    result = subprocess.run(
        [MESH, "--root", str(ROOT), "ps", "--json"], capture_output=True, text=True, check=False
    )
    rows = json.loads(result.stdout or "[]")
    return any(row["state"] == "running" and row["name"] != "kafka" for row in rows)


SCENARIOS = (
    # (what happens, payment token, SKU, quantity, country)
    ("confirmed", "tok_visa", "mug-blue", 2, "DE"),
    ("declined", "tok_chargeDeclined", "mug-blue", 1, "DE"),
    ("out of stock", "tok_visa", "lamp-brass", 5, "DE"),
    ("unshippable", "tok_visa", "mug-blue", 1, "AQ"),
)
EXPECTED = {
    "confirmed": orders_pb.ORDER_STATUS_CONFIRMED,
    "declined": orders_pb.ORDER_STATUS_CANCELLED,
    "out of stock": orders_pb.ORDER_STATUS_CANCELLED,
    "unshippable": orders_pb.ORDER_STATUS_CANCELLED,
}


def place(
    stub: orders_grpc.OrdersServiceStub,
    request_id: str,
    scenario: tuple[str, str, str, int, str],
    traceparent: str | None = None,
) -> str:
    _, token, sku, quantity, country = scenario
    request = orders_pb.PlaceOrderRequest(
        request_id=request_id,
        customer_id=CUSTOMER,
        lines=[
            orders_pb.OrderLine(
                sku=sku,
                quantity=quantity,
                unit_price=common_pb.Money(currency_code="EUR", units=12, nanos=500_000_000),
            )
        ],
        payment_token=token,
        shipping_address=common_pb.Address(
            name="Ada Lovelace",
            line1="1 Analytical Way",
            city="Berlin" if country == "DE" else "McMurdo",
            postal_code="10115" if country == "DE" else "9999",
            country_code=country,
        ),
    )
    metadata = (("traceparent", traceparent),) if traceparent else ()
    return str(stub.PlaceOrder(request, timeout=DEFAULT_TIMEOUT, metadata=metadata).order_id)


def settle(
    stub: orders_grpc.OrdersServiceStub, order_id: str, timeout: float = 60
) -> orders_pb.Order:
    """Poll GetOrder until the saga has ended (CONFIRMED or CANCELLED)."""
    deadline = time.monotonic() + timeout
    while True:
        order = stub.GetOrder(
            orders_pb.GetOrderRequest(order_id=order_id), timeout=DEFAULT_TIMEOUT
        ).order
        if order.status != orders_pb.ORDER_STATUS_PENDING or time.monotonic() > deadline:
            return order
        time.sleep(0.05)  # poll interval within the deadline loop


def stock_line(inventory: inv_grpc.InventoryServiceStub, sku: str) -> str:
    stock = inventory.GetStock(inv_pb.GetStockRequest(sku=sku), timeout=DEFAULT_TIMEOUT)
    return f"{sku:<11} available={stock.available:<3} reserved={stock.reserved}"


def flow(trace_id: str) -> tuple[bool, str]:
    """Play the four orders (the confirmed one in trace ``trace_id``); (True when each ended
    as expected, the confirmed order's id)."""
    ok = True
    heading("0. Access tokens from the mesh's identity (what `mesh token` prints)")
    admin = mint(ROOT, "admin")
    ada = mint(ROOT, "customer", CUSTOMER)
    print(f"  admin        {admin[:12]}...  (mesh token --role admin): sets stock")
    print(
        f"  {CUSTOMER:<12} {ada[:12]}...  (mesh token --role customer --subject {CUSTOMER}):"
        " places and reads her own orders"
    )
    with (
        connect(INVENTORY, credentials=StaticCredentials(admin)) as inv_channel,
        connect(ORDERS, credentials=StaticCredentials(ada)) as orders_channel,
    ):
        inventory = inv_grpc.InventoryServiceStub(inv_channel)
        orders = orders_grpc.OrdersServiceStub(orders_channel)
        heading("1. Stock arrives (InventoryService/SetStock, as an admin)")
        inventory.SetStock(
            inv_pb.SetStockRequest(sku="mug-blue", quantity=10), timeout=DEFAULT_TIMEOUT
        )
        inventory.SetStock(
            inv_pb.SetStockRequest(sku="lamp-brass", quantity=1), timeout=DEFAULT_TIMEOUT
        )
        for sku in ("mug-blue", "lamp-brass"):
            print("  " + stock_line(inventory, sku))

        heading(
            f"2. Four orders are placed with {CUSTOMER}'s token (OrdersService/PlaceOrder"
            " answers PENDING at once)"
        )
        run = uuid.uuid4().hex[:6]
        placed: list[tuple[tuple[str, str, str, int, str], str, str]] = []
        for scenario in SCENARIOS:
            request_id = f"demo-{run}-{scenario[0].replace(' ', '-')}"
            # The confirmed order carries a caller's W3C traceparent: its whole trace is shown last.
            traceparent = f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01" if not placed else None
            order_id = place(orders, request_id, scenario, traceparent)
            placed.append((scenario, request_id, order_id))
            what, token, sku, quantity, country = scenario
            print(f"  {what:<13} {order_id}  ({token}, {quantity} x {sku}, to {country})")

        heading(
            "3. The saga runs: reserve stock -> authorize payment -> book shipment -> confirm"
            f" (orders calls each service as itself, on behalf of {CUSTOMER})"
        )
        for scenario, _, order_id in placed:
            order = settle(orders, order_id)
            status = orders_pb.OrderStatus.Name(order.status).removeprefix("ORDER_STATUS_")
            good = order.status == EXPECTED[scenario[0]]
            ok &= good
            colour = GREEN if good else RED
            reason = f"  reason: {order.cancellation_reason}" if order.cancellation_reason else ""
            print(f"  {scenario[0]:<13} {colour}{status:<10}{RESET}{reason}")

        heading("4. Stock after: only the confirmed order took units; nothing stays reserved")
        for sku in ("mug-blue", "lamp-brass"):
            print("  " + stock_line(inventory, sku))

        heading("5. Replaying a request_id returns the same order and starts nothing new")
        scenario, request_id, order_id = placed[0]
        again = place(orders, request_id, scenario)
        print(f"  {request_id} -> {again} ({'same order' if again == order_id else 'DIFFERENT'})")
        ok &= again == order_id

        heading("6. The event schemas registered by `mesh up`")
        registry = RegistryClient(REGISTRY, timeout=DEFAULT_TIMEOUT)
        for subject in registry.get("/subjects").json():
            print(f"  {subject}")
        registry.close()

        heading("7. A bad request names every bad field")
        try:
            orders.PlaceOrder(
                orders_pb.PlaceOrderRequest(request_id="x", customer_id=CUSTOMER),
                timeout=DEFAULT_TIMEOUT,
            )
        except grpc.RpcError as error:
            print(f"  {RED}{error.code().name}{RESET}: {error.details()}")
    return ok, placed[0][2]


def read_trace(trace_id: str) -> list[dict[str, Any]]:
    """The spans of ``trace_id`` stored so far (``mesh trace ID --json``); empty when none."""
    result = subprocess.run(
        [MESH, "--root", str(ROOT), "trace", trace_id, *TRACE_SOURCE, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    spans: list[dict[str, Any]] = (
        json.loads(result.stdout) if result.returncode == 0 and result.stdout else []
    )
    return spans


def roots(spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The spans whose parent is not in the trace: one, the entry point, in a whole trace."""
    ids = {span["span_id"] for span in spans}
    return [span for span in spans if span.get("parent_span_id") not in ids]


def wait_for_trace(
    trace_id: str, timeout: float = 30.0, *, root: tuple[str, str] | None = None
) -> list[dict[str, Any]]:
    """The trace once its spans, the consumers' included, have arrived (and, given ``root`` as
    (service, span name), once that span is there as the root): each service exports its
    spans in its own batches, every 0.5 s, and the consumers' come after a group join."""
    deadline, seen, stable_since = time.monotonic() + timeout, -1, time.monotonic()
    spans: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        spans = read_trace(trace_id)
        if len(spans) != seen:
            seen, stable_since = len(spans), time.monotonic()
        consumed = any(span["kind"] == "CONSUMER" for span in spans)
        rooted = root is None or [(s["service"], s["name"]) for s in roots(spans)] == [root]
        if consumed and rooted and time.monotonic() - stable_since > 1.5:
            break
        time.sleep(0.25)  # poll interval within the deadline loop
    return spans


def show_trace(trace_id: str) -> None:
    """Print the confirmed order's trace once its spans, the consumers' included, have arrived."""
    heading(f"8. The confirmed order's trace: one trace across the mesh (mesh trace {trace_id})")
    wait_for_trace(trace_id)
    mesh("trace", trace_id, *TRACE_SOURCE)
    trace_links(trace_id)


def trace_links(trace_id: str) -> None:
    """Where to look at a trace next: its waterfall page (`mesh trace ID --html`: one file that
    works offline) and, only when a Jaeger with its UI is in use ($MESH_JAEGER_UI_URL), the
    trace there."""
    page = mesh_output("trace", trace_id, *TRACE_SOURCE, "--open")
    written = page.stdout.splitlines()
    if page.returncode == 0 and len(written) == 2:
        print(f"{DIM}  As a waterfall page (mesh trace {trace_id} --html):{RESET}\n  {written[1]}")
    else:
        print(f"  {RED}mesh trace --html: {page.stderr.strip()}{RESET}")
    if JAEGER_UI:
        print(f"{DIM}  In Jaeger:{RESET}\n  {JAEGER_UI}/trace/{trace_id}")


class LoginFailed(Exception):
    """A step of the device login did not answer as RFC 8628 or the pages say; the message says
    which step and what came back."""


class _Page(HTMLParser):
    """What a person sees and submits on one of identity's pages: its heading, and its first
    form's action, named inputs (hidden ones included) and named buttons."""

    def __init__(self) -> None:
        super().__init__()
        self.heading = ""
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.buttons: set[tuple[str, str]] = set()
        self._in_form = self._form_seen = self._in_h1 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "h1":
            self._in_h1 = True
        elif tag == "form" and not self._form_seen:
            self.action, self._in_form, self._form_seen = values.get("action", ""), True, True
        elif tag == "input" and self._in_form and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")
        elif tag == "button" and self._in_form and values.get("name"):
            self.buttons.add((values["name"], values.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "h1":
            self._in_h1 = False

    def handle_data(self, data: str) -> None:
        if self._in_h1:
            self.heading += data


def read_page(response: requests.Response, step: str) -> tuple[_Page, str]:
    """The page and the absolute URL its form posts to; LoginFailed when it has no form."""
    page = _Page()
    page.feed(response.text)
    if page.action is None:
        raise LoginFailed(f"{step}: HTTP {response.status_code}, {page.heading or 'no form'!r}")
    return page, urljoin(response.url, page.action)


def approve_as_the_person(verification_uri: str, user_code: str, email: str, password: str) -> str:
    """Do in a browser what the TV asked: open the verification page, type the code, sign in,
    press Allow. Returns the heading of the last page."""
    browser = requests.Session()  # keeps the CSRF and session cookies, as a browser does
    browser.headers["User-Agent"] = "meshkit-demo (the person's browser)"
    page, action = read_page(browser.get(verification_uri, timeout=DEFAULT_TIMEOUT), "code page")
    typed = browser.post(
        action, data={**page.fields, "user_code": user_code}, timeout=DEFAULT_TIMEOUT
    )
    # Not signed in yet, so the code leads to the login form (which returns here after).
    page, action = read_page(typed, "after the code")
    if "username" not in page.fields:
        raise LoginFailed(f"after the code: expected the login form, got {page.heading!r}")
    signed_in = browser.post(
        action,
        data={**page.fields, "username": email, "password": password},
        timeout=HASHING_TIMEOUT,
    )
    page, action = read_page(signed_in, "after signing in")
    if ("decision", "approve") not in page.buttons:
        raise LoginFailed(f"after signing in: expected Allow/Deny, got {page.heading!r}")
    done = browser.post(
        action, data={**page.fields, "decision": "approve"}, timeout=DEFAULT_TIMEOUT
    )
    final = _Page()
    final.feed(done.text)
    if done.status_code != 200:
        raise LoginFailed(f"Allow: HTTP {done.status_code}, {final.heading!r}")
    return final.heading.strip()


def poll_for_token(
    tv: requests.Session, token_endpoint: str, grant: dict[str, object], deadline_s: float
) -> dict[str, object]:
    """Poll the token endpoint as RFC 8628 §3.4-3.5 says: every ``interval`` seconds (5 when
    the server gives none), 5 more after each slow_down, until a token, an error or the
    deadline."""
    interval = float(str(grant.get("interval", 5)))
    deadline = time.monotonic() + deadline_s
    polls = 0
    while time.monotonic() < deadline:
        # The wait is the protocol's polling interval, not a pause hoping for a race to settle.
        time.sleep(interval)
        polls += 1
        answer = tv.post(
            token_endpoint,
            data={
                "grant_type": DEVICE_GRANT,
                "device_code": str(grant["device_code"]),
                "client_id": "shop-tv",
            },
            timeout=DEFAULT_TIMEOUT,
        )
        body: dict[str, object] = answer.json()
        if answer.status_code == 200:
            print(f"  {'TV':<7} polls /token every {interval:.0f}s: a token at poll {polls}")
            return body
        if body.get("error") == "authorization_pending":
            continue
        if body.get("error") == "slow_down":
            interval += 5
            continue
        raise LoginFailed(f"token endpoint: {body.get('error')}: {body.get('error_description')}")
    raise LoginFailed(f"no token within {deadline_s:.0f}s of polling")


def service_token(http: requests.Session, token_endpoint: str) -> str:
    """The gateway's own access token (OAuth 2 client credentials, RFC 6749 §4.4)."""
    answer = http.post(
        token_endpoint,
        data={"grant_type": "client_credentials"},
        auth=GATEWAY_CLIENT,
        timeout=DEFAULT_TIMEOUT,
    )
    if answer.status_code != 200:
        raise LoginFailed(f"client credentials of the gateway: HTTP {answer.status_code}")
    return str(answer.json()["access_token"])


def device_login() -> tuple[str, str] | None:
    """A TV signs in with the device flow; the demo plays the TV and the person. (access token,
    user id) when the token acts for the person who signed in and identity says it is active;
    None otherwise."""
    heading(
        "9. A TV signs in with the OAuth 2 device flow (RFC 8628); the demo plays the TV"
        " and the person"
    )
    tv = requests.Session()
    tv.headers["User-Agent"] = "meshkit-demo (shop-tv)"
    email = f"tv-{uuid.uuid4().hex[:8]}@demo.example"
    password = f"demo {secrets.token_urlsafe(12)}"  # known to the person only; never printed
    try:
        with connect(IDENTITY) as channel:
            identity = identity_grpc.IdentityServiceStub(channel)
            user_id = identity.Register(
                identity_pb.RegisterRequest(email=email, password=password),
                timeout=HASHING_TIMEOUT,
            ).user_id
            print(f"  {'person':<7} has an account: {email} (IdentityService/Register)")

            # The TV finds the endpoints in the issuer's metadata (RFC 8414), then asks for codes.
            metadata = tv.get(
                f"{ISSUER}/.well-known/oauth-authorization-server", timeout=DEFAULT_TIMEOUT
            ).json()
            started = tv.post(
                metadata["device_authorization_endpoint"],
                data={"client_id": "shop-tv", "scope": "orders"},
                timeout=DEFAULT_TIMEOUT,
            )
            grant = started.json()
            if started.status_code != 200:
                raise LoginFailed(f"device_authorization: {grant}")
            minutes = int(grant["expires_in"]) // 60
            print(f"  {'TV':<7} shows: To sign in, visit {BOLD}{grant['verification_uri']}{RESET}")
            code = f"{BOLD}{grant['user_code']}{RESET}"
            print(f"  {'':<7}        and enter {code} (for {minutes} min)")

            # The person does it in a browser; the TV polls meanwhile (here: once they are done).
            heading_seen = approve_as_the_person(
                str(grant["verification_uri"]), str(grant["user_code"]), email, password
            )
            print(
                f"  {'person':<7} opens the page, types the code, signs in, presses Allow:"
                f" {DIM}{heading_seen}{RESET}"
            )
            # Allow was pressed already, so one interval or two suffice; a real TV keeps
            # polling until expires_in.
            token = poll_for_token(
                tv, metadata["token_endpoint"], grant, deadline_s=min(60, grant["expires_in"])
            )
            access = str(token["access_token"])
            refresh = " and a refresh token" if "refresh_token" in token else ""
            print(
                f"  {'TV':<7} holds an access token ({access[:12]}..., an ES256 JWT for"
                f" {token['expires_in']} s){refresh}"
            )

            # The TV calls the mesh for the person: the token travels as bearer metadata.
            me = identity.GetMe(
                identity_pb.GetMeRequest(), metadata=bearer(access), timeout=DEFAULT_TIMEOUT
            ).user
            print(f"  {'TV':<7} calls IdentityService/GetMe with authorization: Bearer <token>:")
            print(
                f"  {'':<7} it acts for {BOLD}{me.email}{RESET} (user {me.user_id[:8]}...),"
                f" roles: {', '.join(me.roles)}"
            )
            # Introspection is for resource servers: the gateway asks, with its own token from
            # the client credentials grant (a user's token is refused: PERMISSION_DENIED).
            gateway = service_token(tv, metadata["token_endpoint"])
            seen = identity.IntrospectToken(
                identity_pb.IntrospectTokenRequest(token=access),
                metadata=bearer(gateway),
                timeout=DEFAULT_TIMEOUT,
            )
            expires = seen.expire_time.ToDatetime().strftime("%H:%M:%S UTC")
            print(
                f"  the gateway (client credentials, role service) calls IntrospectToken:"
                f" {'active' if seen.active else 'NOT active'},"
                f" client {seen.client_id}, scope {seen.scope!r}, roles {', '.join(seen.roles)},"
                f" session {seen.session_id[:8]}..., expires {expires}"
            )
            refused = False
            try:
                identity.GetMe(identity_pb.GetMeRequest(), timeout=DEFAULT_TIMEOUT)
            except grpc.RpcError as error:
                refused = error.code() == grpc.StatusCode.UNAUTHENTICATED
                print(f"  GetMe without a token: {RED}{error.code().name}{RESET}")
    except (LoginFailed, grpc.RpcError, requests.RequestException, KeyError, ValueError) as error:
        detail = (
            f"{error.code().name}: {error.details()}"
            if isinstance(error, grpc.RpcError)
            else f"{type(error).__name__}: {error}"
        )
        print(f"  {RED}the device login failed{RESET}: {detail}")
        return None
    good = me.user_id == user_id and seen.active and seen.client_id == "shop-tv" and refused
    if not good:
        print(f"  {RED}the token does not act for {email}, is not active, or is not needed{RESET}")
        return None
    return access, user_id


class GatewayFailed(Exception):
    """A call through the gateway did not answer as the demo expects; the message says which
    call and what came back (the problem's detail for an error)."""


def as_curl(method: str, url: str, body: dict[str, Any] | None = None) -> str:
    """The curl command line for a call the TV makes through the gateway, the token left as
    $TOKEN (a bearer token is a secret: the demo never prints one whole)."""
    verb = ["-X", method] if method != "GET" and body is None else []  # -d makes it a POST
    line = " ".join(["curl", "-s", *verb, shlex.quote(url), '-H "Authorization: Bearer $TOKEN"'])
    if body is not None:
        line += " -H 'Content-Type: application/json' \\\n      -d " + shlex.quote(
            json.dumps(body, separators=(",", ":"))
        )
    return line


def answer(response: requests.Response, what: str) -> dict[str, Any]:
    """The JSON of a 200 answer; GatewayFailed naming the status and problem otherwise."""
    if response.status_code != 200:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text[:200]
        raise GatewayFailed(f"{what}: HTTP {response.status_code}: {detail}")
    document: dict[str, Any] = response.json()
    return document


def tv_order() -> dict[str, Any]:
    """The TV's order, in the gateway's JSON (protojson: lowerCamelCase, int64 as a string); no
    customerId, which the gateway takes from the token."""
    return {
        "requestId": f"demo-tv-{uuid.uuid4().hex[:8]}",
        "paymentToken": "tok_visa",
        "lines": [
            {
                "sku": "mug-blue",
                "quantity": 1,
                "unitPrice": {"currencyCode": "EUR", "units": "12", "nanos": 500_000_000},
            }
        ],
        "shippingAddress": {
            "name": "Ada Lovelace",
            "line1": "1 Analytical Way",
            "city": "Berlin",
            "postalCode": "10115",
            "countryCode": "DE",
        },
    }


GATEWAY_ROOT = ("gateway", "POST /v1/orders")


def gateway_trace(trace_id: str) -> bool:
    """Print the trace of the TV's POST once its spans are in; True when its root is the
    gateway's ``POST /v1/orders`` span."""
    heading(
        f"11. That POST's trace, from its X-Trace-Id: the gateway's span on top"
        f" (mesh trace {trace_id})"
    )
    spans = wait_for_trace(trace_id, root=GATEWAY_ROOT)
    mesh("trace", trace_id, *TRACE_SOURCE)
    trace_links(trace_id)
    top = [(span["service"], span["name"]) for span in roots(spans)]
    rooted = top == [GATEWAY_ROOT]
    if not rooted:
        print(
            f"  {RED}the trace's root is {top or 'missing'},"
            f" not the gateway's POST /v1/orders{RESET}"
        )
    return rooted


def gateway_order(access: str, user_id: str) -> bool:
    """The TV places an order through the gateway with its device-flow token, follows it to
    CONFIRMED there, reads its details, then the POST's trace is shown. True when the order was
    confirmed, placed for the person the token acts for, and its trace is rooted at the
    gateway's ``POST /v1/orders`` span."""
    heading(
        f"10. The TV orders through the gateway ({GATEWAY}, HTTP/JSON) with the same access token"
    )
    web = requests.Session()
    web.headers["Authorization"] = f"Bearer {access}"
    web.headers["User-Agent"] = "meshkit-demo (shop-tv)"
    body = tv_order()
    try:
        print(f"{DIM}  TOKEN=<the TV's access token>")
        print(f"  {as_curl('POST', f'{GATEWAY}/v1/orders', body)}{RESET}")
        placed = web.post(f"{GATEWAY}/v1/orders", json=body, timeout=DEFAULT_TIMEOUT)
        order_id = str(answer(placed, "POST /v1/orders")["orderId"])
        trace_id = placed.headers.get("X-Trace-Id", "")
        print(
            f"  -> 200, order {order_id} PENDING; X-Trace-Id: {trace_id};"
            f" RateLimit: {placed.headers.get('RateLimit', '(none)')}"
        )
        print("     (no customerId sent: the gateway fills it in from the token's subject)")

        print(f"{DIM}  {as_curl('GET', f'{GATEWAY}/v1/orders/{order_id}')}{RESET}")
        deadline, polls = time.monotonic() + 60, 0
        while True:
            polls += 1
            reply = web.get(f"{GATEWAY}/v1/orders/{order_id}", timeout=DEFAULT_TIMEOUT)
            order = answer(reply, f"GET /v1/orders/{order_id}")["order"]
            if order["status"] != "ORDER_STATUS_PENDING" or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # poll interval within the deadline loop
        status = str(order["status"]).removeprefix("ORDER_STATUS_")
        confirmed = status == "CONFIRMED"
        mine = order.get("customerId") == user_id
        colour = GREEN if confirmed else RED
        print(
            f"  -> {colour}{status}{RESET} after {polls} poll(s); customerId"
            f" {str(order.get('customerId', ''))[:8]}... "
            + (
                "is the person the TV signed in as"
                if mine
                else f"{RED}is NOT the TV's person{RESET}"
            )
        )

        # Read your write: the read model answers once it has seen the confirmation (the
        # order's version), so the details below find it there too.
        seen_at = f"{order_id}@{order.get('version', 1)}"
        mine_url = f"{GATEWAY}/v1/orders?consistencyToken={seen_at}"
        print(f"{DIM}  {as_curl('GET', mine_url)}{RESET}")
        listed = answer(web.get(mine_url, timeout=DEFAULT_TIMEOUT), "GET /v1/orders")["orders"]
        row: dict[str, Any] = next((o for o in listed if o.get("orderId") == order_id), {})
        print(
            f"  -> the TV's orders from the read model: {len(listed)}, this one"
            f" {str(row.get('status', 'MISSING')).removeprefix('ORDER_STATUS_')}"
        )
        print(f"{DIM}  {as_curl('GET', f'{GATEWAY}/v1/orders/{order_id}/details')}{RESET}")
        details = answer(
            web.get(f"{GATEWAY}/v1/orders/{order_id}/details", timeout=DEFAULT_TIMEOUT),
            f"GET /v1/orders/{order_id}/details",
        )
        payment = details.get("payment", {})
        shipment = details.get("shipment", {})
        print(
            f"  -> one answer from orders, order views, payments and shipping:"
            f" order {details.get('order', {}).get('status', '-')},"
            f" {len(details.get('events', []))} events,"
            f" {len(details.get('view', {}).get('timeline', []))} timeline entries"
        )
        print(
            f"     payment {payment.get('status', '-')}, shipment {shipment.get('status', '-')}"
            f" (tracking {shipment.get('trackingNumber', '-')}),"
            f" missing: {details.get('missing') or 'nothing'}"
        )
    except (GatewayFailed, requests.RequestException, KeyError, ValueError) as error:
        print(
            f"  {RED}the order through the gateway failed{RESET}: {type(error).__name__}: {error}"
        )
        return False
    if not trace_id:
        print(f"  {RED}the gateway's answer has no X-Trace-Id{RESET}")
        return False
    return confirmed and mine and gateway_trace(trace_id)


def mesh_output(*args: str) -> subprocess.CompletedProcess[str]:
    """`mesh ARGS...`, its output captured."""
    return subprocess.run(
        [MESH, "--root", str(ROOT), *args], capture_output=True, text=True, check=False
    )


def poll(what: Callable[[], bool], timeout: float) -> bool:
    """``what()`` until it is true or ``timeout`` seconds have passed; its last answer."""
    deadline = time.monotonic() + timeout
    while not (done := what()) and time.monotonic() < deadline:
        time.sleep(0.5)  # poll interval within the deadline loop
    return done


def refused_and_audited(access: str, user_id: str, order_id: str) -> bool:
    """The TV's person (token ``access``, user ``user_id``) asks for Ada's order ``order_id``:
    PERMISSION_DENIED over gRPC, 403 through the gateway; then the denial is looked up in the
    audit trail (``mesh audit ls``, with the auditor's token it mints) and the trail verified
    (``mesh audit verify``). True when all four held."""
    heading(
        f"12. A customer may read only their own orders: the TV's person asks for {CUSTOMER}'s"
        f" order {order_id}"
    )
    denied = forbidden = False
    with connect(ORDERS) as channel:
        try:
            orders_grpc.OrdersServiceStub(channel).GetOrder(
                orders_pb.GetOrderRequest(order_id=order_id),
                metadata=bearer(access),
                timeout=DEFAULT_TIMEOUT,
            )
            print(f"  {RED}GetOrder answered: the order of someone else was shown{RESET}")
        except grpc.RpcError as error:
            denied = error.code() == grpc.StatusCode.PERMISSION_DENIED
            print(f"  OrdersService/GetOrder: {RED}{error.code().name}{RESET}: {error.details()}")
    through = requests.get(
        f"{GATEWAY}/v1/orders/{order_id}", headers=dict(bearer(access)), timeout=DEFAULT_TIMEOUT
    )
    forbidden = through.status_code == 403
    print(f"{DIM}  {as_curl('GET', f'{GATEWAY}/v1/orders/{order_id}')}{RESET}")
    try:
        problem = through.json()
    except ValueError:
        problem = {}
    title, detail = problem.get("title", ""), problem.get("detail", "")
    print(f"  -> {RED}{through.status_code}{RESET} {title}: {detail}")

    heading(
        "13. Each denial is an audit record (orders' outbox -> audit.events.v1 -> the audit"
        " service's hash chain): mesh audit ls, with an auditor's token"
    )
    query = ("audit", "ls", "--actor", user_id, "--resource", f"Order:{order_id}")
    found: list[dict[str, Any]] = []

    def recorded() -> bool:
        listed = mesh_output(*query, "--json")
        if listed.returncode == 0:
            found[:] = [row["record"] for row in json.loads(listed.stdout or "[]")]
        return len(found) >= 2 and all(r["outcome"] == "DENIED" for r in found)

    audited = poll(recorded, AUDIT_WAIT_S)
    print(f"{DIM}  .venv/bin/mesh {' '.join(query)}{RESET}")
    mesh(*query)
    if not audited:
        print(f"  {RED}the two denials did not reach the trail within {AUDIT_WAIT_S:.0f}s{RESET}")
    print(f"{DIM}  .venv/bin/mesh audit verify{RESET}")
    verified = mesh("audit", "verify", "--quiet").returncode == 0
    return denied and forbidden and audited and verified


def orders_runs(version: int, support: str) -> bool:
    """Whether orders has applied ``version`` of its namespace (its ACK in `mesh config status`)."""
    listed = mesh_output("config", "status", "orders", "--json", "--token", support)
    if listed.returncode != 0:
        return False
    return any(
        c["client"].startswith("orders@") and c["version"] == version and c["accepted"]
        for c in json.loads(listed.stdout or "[]")
    )


def set_line_limit(value: int, reason: str, support: str) -> int:
    """`mesh config set orders max_lines_per_order=VALUE`, printed; waits for orders' ACK and
    returns the version (0 when the set failed or orders did not apply it in time)."""
    print(
        f"{DIM}  .venv/bin/mesh config set orders max_lines_per_order={value} --reason"
        f" {shlex.quote(reason)}{RESET}"
    )
    stored = mesh_output(
        "config", "set", "orders", f"max_lines_per_order={value}", "--reason", reason
    )
    print(f"  {(stored.stdout or stored.stderr).strip()}")
    if stored.returncode != 0:
        return 0
    version = int(stored.stdout.split("version", 1)[1].split()[0])  # "orders: version 7 stored"
    if not poll(lambda: orders_runs(version, support), APPLIED_WAIT_S):
        print(f"  {RED}orders did not apply version {version} within {APPLIED_WAIT_S:.0f}s{RESET}")
        return 0
    return version


def two_line_order(orders: orders_grpc.OrdersServiceStub) -> grpc.RpcError | str:
    """A 2-line order of Ada's: its id, or the error that refused it."""
    request = orders_pb.PlaceOrderRequest(
        request_id=f"demo-lines-{uuid.uuid4().hex[:8]}",
        customer_id=CUSTOMER,
        payment_token="tok_visa",
        lines=[
            orders_pb.OrderLine(
                sku=sku, quantity=1, unit_price=common_pb.Money(currency_code="EUR", units=12)
            )
            for sku in ("mug-blue", "lamp-brass")
        ],
        shipping_address=common_pb.Address(
            name="Ada Lovelace",
            line1="1 Analytical Way",
            city="Berlin",
            postal_code="10115",
            country_code="DE",
        ),
    )
    try:
        return str(orders.PlaceOrder(request, timeout=DEFAULT_TIMEOUT).order_id)
    except grpc.RpcError as error:
        return error


def live_config() -> bool:
    """Step 14: orders' line limit changed live and back; True when the change took effect."""
    heading(
        "14. Configuration pushed live: orders' line limit is the config namespace 'orders'"
        " (mesh config), applied by the running orders service with no restart"
    )
    support = mint(ROOT, "support")
    ada = mint(ROOT, "customer", CUSTOMER)
    limited = set_line_limit(1, "demo: one line per order", support)
    refused = accepted = False
    with connect(ORDERS, credentials=StaticCredentials(ada)) as channel:
        orders = orders_grpc.OrdersServiceStub(channel)
        if limited:
            print(f"  orders runs version {limited}; {CUSTOMER} places a 2-line order:")
            answer = two_line_order(orders)
            if isinstance(answer, grpc.RpcError):
                refused = answer.code() == grpc.StatusCode.INVALID_ARGUMENT and (
                    f"config namespace orders, version {limited}" in str(answer.details())
                )
                print(f"  {RED}{answer.code().name}{RESET}: {answer.details()}")
            else:
                print(f"  {RED}accepted ({answer}): the limit did not apply{RESET}")
        restored = set_line_limit(50, "demo: back to the default", support)
        if restored:
            answer = two_line_order(orders)
            accepted = not isinstance(answer, grpc.RpcError)
            shown = answer if accepted else f"{RED}refused{RESET}: {answer}"
            print(f"  the same 2-line order now: {GREEN if accepted else ''}{shown}{RESET}")
    print(f"{DIM}  .venv/bin/mesh config history orders{RESET}")
    mesh("config", "history", "orders", "--token", support)
    print(f"{DIM}  .venv/bin/mesh config status orders   (each client's ACK/NACK){RESET}")
    mesh("config", "status", "orders", "--token", support)
    return refused and accepted


def feature_flag() -> None:
    """Step 15: the express-shipping flag for two customers, as shipping evaluates it."""
    heading(
        "15. A feature flag, evaluated in process as shipping does (OpenFeature over the flagd"
        " flag set in proto/shop/config/flags.json: 20 % of customers shipping to DE, AT, NL)"
    )
    support = mint(ROOT, "support")
    for customer, country in FLAG_CUSTOMERS:
        context = json.dumps({"targetingKey": customer, "country": country})
        print(
            f"{DIM}  .venv/bin/mesh flags eval checkout.express-shipping --context"
            f" {shlex.quote(context)}{RESET}"
        )
        mesh("flags", "eval", "checkout.express-shipping", "--context", context, "--token", support)


def experiment_report() -> bool:
    """Step 16: simulated traffic through checkout-cta, and its report; True when the report
    counted it."""
    heading(
        f"16. The shop page's checkout experiment (checkout-cta): {SIMULATED_UNITS} simulated"
        " customers, then the analysis"
    )
    support = mint(ROOT, "support")

    def units() -> int:
        listed = mesh_output("experiments", "report", "checkout-cta", "--json", "--token", support)
        if listed.returncode != 0:
            return 0
        return sum(int(v["units"]) for v in json.loads(listed.stdout)["variants"])

    before = units()
    simulate = (
        "experiments",
        "simulate",
        "checkout-cta",
        "--units",
        str(SIMULATED_UNITS),
        "--rates",
        "control=0.10,buy-now=0.12",
        "--seed",
        str(secrets.randbelow(10**9)),  # new synthetic customers on every run
    )
    print(f"{DIM}  .venv/bin/mesh {' '.join(simulate)}{RESET}")
    if mesh(*simulate, "--token", support).returncode != 0:
        return False
    counted = poll(lambda: units() >= before + SIMULATED_UNITS, REPORT_WAIT_S)
    print(f"{DIM}  .venv/bin/mesh experiments report checkout-cta{RESET}")
    mesh("experiments", "report", "checkout-cta", "--token", support)
    if not counted:
        print(f"  {RED}the report did not count the traffic within {REPORT_WAIT_S:.0f}s{RESET}")
    return counted


def main() -> int:
    already = running_before()
    heading("meshkit demo: starting the mesh (mesh up -d)")
    started = time.monotonic()
    if mesh("up", "-d").returncode != 0:
        print(f"{RED}mesh up failed; see `mesh logs`{RESET}", file=sys.stderr)
        return 1
    print(f"{GREEN}mesh healthy in {time.monotonic() - started:.1f}s{RESET}")
    mesh("ps")
    trace_id = uuid.uuid4().hex
    ok = signed_in = through_gateway = audited = controlled = False
    try:
        ok, confirmed = flow(trace_id)
        show_trace(trace_id)
        login = device_login()
        signed_in = login is not None
        if login is not None:
            through_gateway = gateway_order(*login)
            audited = refused_and_audited(*login, confirmed)
        controlled = live_config()
        feature_flag()
        controlled = experiment_report() and controlled
    finally:
        heading("Try it yourself")
        print(
            f"""{DIM}  .venv/bin/mesh up -d
  G=".cache/bin/grpcurl -plaintext"
  ADMIN=$(.venv/bin/mesh token --role admin)       # every call carries a token: mesh token
  C1=$(.venv/bin/mesh token --role customer --subject c-1)  # c-1's own orders only
  $G {ORDERS} list
  $G -H "authorization: Bearer $ADMIN" -d '{{"sku":"mug-blue","quantity":10}}' \\
      {INVENTORY} shop.inventory.v1.InventoryService/SetStock
  $G -H "authorization: Bearer $C1" \\
      -d '{{"request_id":"r-1","customer_id":"c-1","payment_token":"tok_visa",
          "lines":[{{"sku":"mug-blue","quantity":1,
                    "unit_price":{{"currency_code":"EUR","units":12}}}}],
          "shipping_address":{{"name":"Ada","line1":"1 Main St","city":"Berlin",
                               "postal_code":"10115","country_code":"DE"}}}}' \\
      {ORDERS} shop.orders.v1.OrdersService/PlaceOrder
  $G -H "authorization: Bearer $C1" -d '{{"order_id":"<order_id>"}}' \\
      {ORDERS} shop.orders.v1.OrdersService/GetOrder
  $G -H "authorization: Bearer $C1" -d '{{"order_id":"<order_id>"}}' \\
      {ORDERS} shop.orders.v1.OrdersService/ListOrderEvents
  $G -d '{{"sku":"mug-blue"}}' {INVENTORY} shop.inventory.v1.InventoryService/GetStock
  $G -d '{{"sku":"mug-blue","quantity":1}}' {INVENTORY} shop.inventory.v1.InventoryService/SetStock
      (no token: Unauthenticated, saying what to send)
  curl -s {ISSUER}/.well-known/oauth-authorization-server
  curl -s {ISSUER}/device_authorization -d client_id=shop-tv -d scope=orders
  $G -H "authorization: Bearer $TOKEN" {IDENTITY} shop.identity.v1.IdentityService/GetMe
  (every OAuth flow, with curl: README.md, "Identity and OAuth 2")
  curl -s {GATEWAY}/v1/stock/mug-blue
  curl -s {GATEWAY}/v1/orders -H "Authorization: Bearer $TOKEN"
  (every gateway route, with curl: README.md, "The gateway (HTTP/JSON)")
  .venv/bin/mesh audit ls --action orders.read; .venv/bin/mesh audit verify
  (who may do what, the audit trail: README.md, "Permissions and audit")
  .venv/bin/mesh config set orders max_lines_per_order=20; .venv/bin/mesh config history orders
  .venv/bin/mesh flags ls; .venv/bin/mesh experiments report checkout-cta
  (config push, flags, experiments: docs/control-plane.md)
  .venv/bin/schema-registry subjects
  .venv/bin/mesh traces; .venv/bin/mesh trace <trace_id> --open   # a waterfall page to open
  (Jaeger's UI: docker compose up, then http://127.0.0.1:16686; the local
   .cache/bin/jaeger --config scripts/jaeger.yaml serves its API only: mesh trace --jaeger)
  .venv/bin/mesh ps; .venv/bin/mesh sagas; .venv/bin/mesh logs orders; .venv/bin/mesh down{RESET}"""
        )
        if already:
            heading("The mesh was running before the demo; it is left running.")
        else:
            heading("Stopping the mesh (mesh down)")
            mesh("down")
    if not ok:
        print(f"\n{RED}demo: an order did not end as its scenario says{RESET}", file=sys.stderr)
        return 1
    if not signed_in:
        print(f"\n{RED}demo: the device login did not give a working token{RESET}", file=sys.stderr)
        return 1
    if not through_gateway:
        print(
            f"\n{RED}demo: the order through the gateway did not confirm under a trace rooted at"
            f" the gateway{RESET}",
            file=sys.stderr,
        )
        return 1
    if not audited:
        print(
            f"\n{RED}demo: reading another customer's order was not refused, audited and"
            f" verified{RESET}",
            file=sys.stderr,
        )
        return 1
    if not controlled:
        print(
            f"\n{RED}demo: the live config change did not take effect, or the experiment's"
            f" report did not count the simulated traffic{RESET}",
            file=sys.stderr,
        )
        return 1
    print(f"\n{GREEN}demo complete{RESET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
