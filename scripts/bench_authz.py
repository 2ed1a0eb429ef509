"""What the permission check costs every RPC (meshkit.authz), against the same server without it.

Two meshkit gRPC servers, in a process of their own (the client's threads would otherwise compete
with them for one GIL), serve a trivial GetOrder (the handler does nothing, so the check is as
large a share of the call as it can ever be). The same calls, with a customer's access token, go
to a server with the kit's authorizer (token verified against a JWKS, the contract's
permission asked of a Cedar policy, the order's owner resolved) and to one without, alternately,
in the same run: the ratio is what the check costs a call. It also measures one decision, cached and
uncached (the Cedar engine itself). Nothing passes or fails on a number.

    .venv/bin/python scripts/bench_authz.py [--seconds 3] [--threads 1,8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import jwt
from benchlib import calls_per_second, record
from cryptography.hazmat.primitives.asymmetric import ec

from meshkit import authz
from meshkit.server import MeshServer, ServiceBinding, create_server
from meshkit.settings import ServerSettings
from meshkit.tokens import TokenVerifier
from shop.orders.v1 import orders_pb2 as pb
from shop.orders.v1 import orders_pb2_grpc as pb_grpc

ISSUER = "http://issuer.bench"
POLICY = """
permit (principal in Role::"customer", action == Action::"orders.read", resource)
when { resource.owner == principal };
permit (principal in Role::"support", action == Action::"orders.read", resource);
"""


class Orders(pb_grpc.OrdersServiceServicer):
    def GetOrder(self, request: pb.GetOrderRequest, context: grpc.ServicerContext) -> Any:  # noqa: N802
        return pb.GetOrderResponse()


def issuer(folder: Path) -> tuple[str, Callable[[str, str], str]]:
    """A JWKS file and a minting function (sub, role) -> an identity-shaped access token."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk |= {"kid": "bench", "alg": "ES256", "use": "sig"}
    path = folder / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))

    def mint(sub: str, role: str) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER, "sub": sub, "aud": "meshkit", "exp": now + 3600, "iat": now,
            "jti": uuid.uuid4().hex, "client_id": "bench", "scope": "", "roles": [role],
        }  # fmt: skip
        return jwt.encode(claims, key, algorithm="ES256", headers={"typ": "at+jwt", "kid": "bench"})

    return path.as_uri(), mint


def serve(authorizer: authz.Authorizer | None) -> MeshServer:
    binding = ServiceBinding(
        Orders(), pb_grpc.add_OrdersServiceServicer_to_server, "shop.orders.v1.OrdersService"
    )
    server = create_server("bench", ServerSettings(port=0), [binding], authorizer=authorizer)
    server.start()
    return server


def rps(port: int, metadata: list[tuple[str, str]], threads: int, seconds: float) -> float:
    """GetOrder calls per second from ``threads`` client threads over one channel."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.OrdersServiceStub(channel)
        request = pb.GetOrderRequest(order_id="o-1")
        return calls_per_second(
            lambda: stub.GetOrder(request, metadata=metadata, timeout=5), threads, seconds
        )


def check_us(jwks: str, token: str, seconds: float) -> float:
    """Microseconds of one whole check in this process, as the interceptor makes it: the token
    (verified once, then remembered), the contract's rule, the owner, the cached decision."""
    verifier = TokenVerifier(jwks, issuer=ISSUER, audience="meshkit")
    owners = {"order_id": authz.by_id({"o-1": "ada"}.get)}
    checker = authz.Authorizer("orders", verifier, authz.Policy(POLICY), owners=owners)
    metadata = (("authorization", f"Bearer {token}"), ("user-agent", "grpc-python"))
    request = pb.GetOrderRequest(order_id="o-1")
    method = "/shop.orders.v1.OrdersService/GetOrder"
    count, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        for _ in range(100):
            checker.authorize(checker.rule(method), checker.authenticate(metadata), request, 5.0)
        count += 100
    return (time.perf_counter() - began) / count * 1e6


def decisions(seconds: float) -> tuple[float, float]:
    """(cached, uncached) decisions per second of the Cedar policy."""
    policy = authz.Policy(POLICY, cache_size=1)
    ada = authz.Principal("ada", ("customer",))
    cached = authz.Policy(POLICY)
    rates = []
    for p in (cached, policy):
        count, began = 0, time.perf_counter()
        while time.perf_counter() - began < seconds:
            for n in range(100):
                # cache_size=1 and alternating ownership: every uncached call evaluates afresh
                p.decide(ada, "orders.read", "Order", owned=n % 2 == 0)
            count += 100
        rates.append(count / (time.perf_counter() - began))
    return rates[0], rates[1]


def serve_both(jwks: str) -> None:
    """The servers' process: both servers, their ports on stdout, until stdin closes."""
    verifier = TokenVerifier(jwks, issuer=ISSUER, audience="meshkit")
    owners = {"order_id": authz.by_id({"o-1": "ada"}.get)}
    checked = serve(authz.Authorizer("orders", verifier, authz.Policy(POLICY), owners=owners))
    bare = serve(None)
    print(json.dumps({"checked": checked.port, "bare": bare.port}), flush=True)
    sys.stdin.read()
    checked.stop(0)
    bare.stop(0)


def main() -> int:
    """Measure and record authz.rpc (per thread count) and authz.decision."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    parser.add_argument("--threads", default="1,8", help="client threads, comma-separated")
    parser.add_argument("--serve", metavar="JWKS_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_both(args.serve)
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        jwks, mint = issuer(Path(scratch))
        servers = subprocess.Popen(
            [sys.executable, __file__, "--serve", jwks],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert servers.stdin is not None and servers.stdout is not None
        ports = json.loads(servers.stdout.readline())
        token = mint("ada", "customer")
        metadata = [("authorization", f"Bearer {token}")]
        unchecked_c1 = 0.0
        try:
            for threads in (int(t) for t in args.threads.split(",")):
                with_check, without = 0.0, 0.0
                for _ in range(2):  # alternate, so drift on a busy machine hits both alike
                    with_check += rps(ports["checked"], metadata, threads, args.seconds / 2)
                    without += rps(ports["bare"], metadata, threads, args.seconds / 2)
                with_check, without = with_check / 2, without / 2
                if threads == 1:
                    unchecked_c1 = without
                cost_us = (1 / with_check - 1 / without) * 1e6  # the servers are CPU-bound
                record(
                    f"authz.rpc.c{threads}",
                    with_check,
                    "calls/s",
                    baseline=without,
                    baseline_name="the same server without the authorizer",
                    cost_us_per_call=round(cost_us, 1),
                )
                print(
                    f"  GetOrder c{threads:<3} checked {with_check:>8,.0f}/s   unchecked"
                    f" {without:>8,.0f}/s   ratio {with_check / without:.2f}"
                    f"   (~{cost_us:.0f} us per call)"
                )
        finally:
            servers.stdin.close()
            servers.wait(timeout=30)
        one_check = check_us(jwks, token, args.seconds / 2)
    if unchecked_c1:
        call_us = 1e6 / unchecked_c1
        record(
            "authz.check",
            one_check,
            "us",
            baseline=call_us,
            baseline_name="one unchecked GetOrder round trip (c1)",
            better="lower",
        )
        print(
            f"  one check {one_check:>6.1f} us in process   an unchecked call {call_us:>6.0f} us"
            f"   share {one_check / call_us:.1%}"
        )
    cached, uncached = decisions(args.seconds / 2)
    record(
        "authz.decision",
        cached,
        "decisions/s",
        baseline=uncached,
        baseline_name="the Cedar engine evaluating afresh (cedarpy)",
    )
    print(
        f"  decision  cached {cached:>10,.0f}/s ({1e6 / cached:.1f} us)   Cedar afresh"
        f" {uncached:>8,.0f}/s ({1e6 / uncached:.0f} us)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
