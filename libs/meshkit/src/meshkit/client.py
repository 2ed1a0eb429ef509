"""Client channels to mesh services: retries on UNAVAILABLE in the service config, health waits,
trace propagation (a CLIENT span per call and W3C ``traceparent`` metadata; see meshkit.telemetry).

gRPC sets no default deadline; pass ``timeout=`` on every call (``DEFAULT_TIMEOUT`` is a sane
one). Retries happen inside gRPC (gRFC A6), bounded by the call's deadline and throttled by a retry
budget, so a dead dependency cannot multiply the load on it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshkit.addresses import address_of
from meshkit.credentials import CredentialsInterceptor, TokenSource
from meshkit.telemetry import ClientInterceptor

DEFAULT_TIMEOUT = 5.0

RETRY_SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [{}],  # every method of every service
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1},
}


def connect(
    target: str, *, retry: bool = True, credentials: TokenSource | None = None
) -> grpc.Channel:
    """An insecure channel to ``target``, retrying UNAVAILABLE when ``retry``.

    Every call carries an authorization (meshkit.credentials): the token of the RPC being
    handled, forwarded, or ``credentials``' own token (acting for a user inside
    ``authz.acting_for``).

    ``target`` is a mesh service's name (``"inventory"``, resolved by ``meshkit.addresses``:
    ``MESH_ADDRESS_INVENTORY``, else mesh.toml) or an explicit ``host:port``.

    Every call through it carries the current trace context as ``traceparent`` metadata and,
    while tracing is on, is recorded as a CLIENT span (child of the current span).

    Thread safety: a channel is safe to share across threads; build one per target and reuse it.
    """
    if ":" not in target:
        target = address_of(target)
    options: list[tuple[str, Any]] = [
        ("grpc.enable_retries", 1 if retry else 0),
        # Reconnect quickly after a peer restarts (the default backoff starts at 1 s, up to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
    ]
    if retry:
        options.append(("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG)))
    return grpc.intercept_channel(
        grpc.insecure_channel(target, options=options),
        ClientInterceptor(target),
        CredentialsInterceptor(credentials),
    )


def check_health(channel: grpc.Channel, service: str = "", timeout: float = 1.0) -> bool:
    """True when the server's grpc.health.v1 reports ``service`` SERVING."""
    stub = health_pb2_grpc.HealthStub(channel)
    try:
        response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    except grpc.RpcError:
        return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def wait_healthy(target: str, service: str = "", timeout: float = 30.0) -> None:
    """Poll ``target`` until ``service`` is SERVING; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(target) as channel:
        while True:
            if check_health(channel, service, timeout=min(1.0, timeout)):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target} not SERVING after {timeout:.0f}s")
            time.sleep(0.05)  # poll interval within the deadline loop
