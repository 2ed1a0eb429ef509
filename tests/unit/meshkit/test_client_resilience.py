"""meshkit.client's channels under failure (issue 15), against real gRPC servers built by the
kit: retries only where the contract says a method is idempotent, a retry budget that stops a
storm, circuit breakers that open and recover, bulkheads that keep one slow peer from taking every
thread, a deadline on every call, and round_robin over replicas that skips a dead one."""

from __future__ import annotations

import collections
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from meshkit import ServerSettings, ServiceBinding, create_server, deadlines, resilience
from meshkit.addresses import env_key
from meshkit.client import connect
from meshkit.resilience import Downstreams, Limits, State
from meshkit.server import MeshServer
from meshkit.service import Service, ServiceContext
from meshkit.settings import ServiceSettings
from shop.identity.v1 import identity_pb2, identity_pb2_grpc

GET_ME = "/shop.identity.v1.IdentityService/GetMe"  # NO_SIDE_EFFECTS
REGISTER = "/shop.identity.v1.IdentityService/Register"  # not retried (no idempotency_level)


class Flaky(identity_pb2_grpc.IdentityServiceServicer):
    """GetMe and Register that fail with UNAVAILABLE while ``failing`` is set (or for the first
    ``fail_first`` attempts), wait ``delay`` seconds, and count every attempt that arrives."""

    def __init__(self) -> None:
        self.attempts: collections.Counter[str] = collections.Counter()
        self.failing = False
        self.fail_first = 0
        self.delay = 0.0
        self.release = threading.Event()
        self.remaining: list[float | None] = []
        self._lock = threading.Lock()

    def _answer(self, method: str, context: grpc.ServicerContext) -> None:
        with self._lock:
            self.attempts[method] += 1
            attempt = self.attempts[method]
        self.remaining.append(context.time_remaining())
        if self.delay:
            self.release.wait(self.delay)
        if self.failing or attempt <= self.fail_first:
            context.abort(grpc.StatusCode.UNAVAILABLE, "flaky is failing on purpose")

    def GetMe(
        self, request: identity_pb2.GetMeRequest, context: grpc.ServicerContext
    ) -> identity_pb2.GetMeResponse:
        self._answer(GET_ME, context)
        return identity_pb2.GetMeResponse(user=identity_pb2.User(user_id="u1"))

    def Register(
        self, request: identity_pb2.RegisterRequest, context: grpc.ServicerContext
    ) -> identity_pb2.RegisterResponse:
        self._answer(REGISTER, context)
        return identity_pb2.RegisterResponse(user_id="u2")


def new_flaky() -> Flaky:
    """A Flaky servicer (the contract's other methods stay the generated UNIMPLEMENTED ones)."""
    return Flaky()  # type: ignore[abstract]


def serve(servicer: Flaky, name: str = "flaky") -> MeshServer:
    server = create_server(
        name,
        ServerSettings(port=0, grace_seconds=0),
        [
            ServiceBinding(
                servicer,
                identity_pb2_grpc.add_IdentityServiceServicer_to_server,
                "shop.identity.v1.IdentityService",
            )
        ],
    )
    server.start()
    return server


@pytest.fixture
def flaky() -> Iterator[tuple[Flaky, MeshServer]]:
    servicer = new_flaky()
    server = serve(servicer)
    yield servicer, server
    servicer.release.set()
    server.stop(0)


def stub(
    server: MeshServer, downstreams: Downstreams, *, target: str | None = None
) -> identity_pb2_grpc.IdentityServiceStub:
    channel = connect(target or f"127.0.0.1:{server.port}", downstreams=downstreams)
    return identity_pb2_grpc.IdentityServiceStub(channel)


NO_BREAKER = Limits(window=10_000, min_calls=10_000)


def code_of(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def test_idempotent_methods_are_retried_and_the_others_never(
    flaky: tuple[Flaky, MeshServer],
) -> None:
    servicer, server = flaky
    client = stub(server, Downstreams(NO_BREAKER))
    servicer.fail_first = 2
    assert client.GetMe(identity_pb2.GetMeRequest(), timeout=5).user.user_id == "u1"
    assert servicer.attempts[GET_ME] == 3  # two UNAVAILABLE, retried by gRPC, then OK
    assert code_of(lambda: client.Register(identity_pb2.RegisterRequest(), timeout=5)) == (
        grpc.StatusCode.UNAVAILABLE
    )
    assert servicer.attempts[REGISTER] == 1  # not idempotent: the transport never retried it


def test_the_retry_budget_stops_a_retry_storm(flaky: tuple[Flaky, MeshServer]) -> None:
    servicer, server = flaky
    client = stub(server, Downstreams(NO_BREAKER))
    servicer.failing = True
    calls = 60
    for _ in range(calls):
        assert code_of(lambda: client.GetMe(identity_pb2.GetMeRequest(), timeout=5)) == (
            grpc.StatusCode.UNAVAILABLE
        )
    # Without the budget every call would be tried 4 times (240). With it, retries stop once
    # half of the 10 tokens are spent: a few retries at first, then one attempt per call.
    assert calls <= servicer.attempts[GET_ME] <= calls + 6


def test_the_breaker_opens_fails_fast_naming_the_downstream_and_recovers(
    flaky: tuple[Flaky, MeshServer],
) -> None:
    servicer, server = flaky
    registry = Downstreams(
        Limits(window=10, min_calls=5, failure_rate=0.5, open_s=0.3, half_open_calls=2)
    )
    changes: list[State] = []
    registry.listen(lambda downstream, state: changes.append(state))
    client = stub(server, registry, target=f"127.0.0.1:{server.port}")
    servicer.failing = True
    for _ in range(5):  # Register: one attempt per call, so five failures in the window
        code_of(lambda: client.Register(identity_pb2.RegisterRequest(), timeout=5))
    assert changes == [State.OPEN]
    before = servicer.attempts[REGISTER]
    with pytest.raises(grpc.RpcError) as caught:
        client.GetMe(identity_pb2.GetMeRequest(), timeout=5)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"circuit breaker for '127.0.0.1:{server.port}' is open" in (
        caught.value.details() or ""
    )
    assert servicer.attempts[REGISTER] == before and servicer.attempts[GET_ME] == 0  # not sent

    servicer.failing = False
    deadline = time.monotonic() + 5
    while True:  # after open_s, trial calls go through and close it
        try:
            client.GetMe(identity_pb2.GetMeRequest(), timeout=5)
            client.GetMe(identity_pb2.GetMeRequest(), timeout=5)
            break
        except grpc.RpcError as error:
            assert "circuit breaker" in (error.details() or "")
            assert time.monotonic() < deadline, "the breaker never let a trial call through"
            registry.breaker(f"127.0.0.1:{server.port}")  # same breaker, polled below
            threading.Event().wait(0.05)  # poll interval within the deadline loop
    assert changes == [State.OPEN, State.HALF_OPEN, State.CLOSED]
    assert registry.states() == {f"127.0.0.1:{server.port}": State.CLOSED}


def test_a_failing_trial_opens_the_breaker_again(flaky: tuple[Flaky, MeshServer]) -> None:
    servicer, server = flaky
    registry = Downstreams(Limits(window=4, min_calls=2, open_s=0.2, half_open_calls=1))
    client = stub(server, registry)
    servicer.failing = True
    for _ in range(2):
        code_of(lambda: client.Register(identity_pb2.RegisterRequest(), timeout=5))
    downstream = f"127.0.0.1:{server.port}"
    assert registry.states()[downstream] is State.OPEN
    deadline = time.monotonic() + 5
    while registry.states()[downstream] is State.OPEN:
        assert time.monotonic() < deadline
        threading.Event().wait(0.02)  # poll interval within the deadline loop
    assert registry.states()[downstream] is State.HALF_OPEN
    code_of(lambda: client.Register(identity_pb2.RegisterRequest(), timeout=5))  # the trial
    assert registry.states()[downstream] is State.OPEN


def test_business_errors_do_not_open_the_breaker() -> None:
    registry = Downstreams(Limits(window=4, min_calls=2))
    breaker = registry.breaker("peer")
    for _ in range(10):
        assert breaker.acquire() is None
        breaker.record(grpc.StatusCode.NOT_FOUND)
    assert breaker.state is State.CLOSED


def test_the_bulkhead_caps_calls_in_flight_to_one_downstream(
    flaky: tuple[Flaky, MeshServer],
) -> None:
    servicer, server = flaky
    other = new_flaky()
    other_server = serve(other, "other")
    try:
        registry = Downstreams(Limits(max_concurrent=2, min_calls=10_000, window=10_000))
        slow = stub(server, registry)
        fast = stub(other_server, registry)
        servicer.delay = 10
        pending = [slow.GetMe.future(identity_pb2.GetMeRequest(), timeout=10) for _ in range(2)]
        with pytest.raises(grpc.RpcError) as caught:
            slow.GetMe(identity_pb2.GetMeRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "bulkhead" in (caught.value.details() or "") and "2 calls in flight" in (
            caught.value.details() or ""
        )
        # Another downstream has a bulkhead of its own.
        assert fast.GetMe(identity_pb2.GetMeRequest(), timeout=5).user.user_id == "u1"
        servicer.release.set()
        for call in pending:
            assert call.result().user.user_id == "u1"
        assert slow.GetMe(identity_pb2.GetMeRequest(), timeout=5).user.user_id == "u1"
    finally:
        other.release.set()
        other_server.stop(0)


def _fast_latencies(bulkhead: int) -> list[float]:
    """A caller with 4 worker threads and a queue of 24 tasks, two of every three calling a slow
    downstream (0.3 s) and the rest a fast one: how long each fast task waited to be done."""
    slow_servicer, fast_servicer = new_flaky(), new_flaky()
    slow_servicer.delay = 0.3
    slow_server, fast_server = serve(slow_servicer, "slow"), serve(fast_servicer, "fast")
    registry = Downstreams(
        Limits(
            per_peer_concurrent={f"127.0.0.1:{slow_server.port}": bulkhead},
            min_calls=10_000,
            window=10_000,
        )
    )
    slow, fast = stub(slow_server, registry), stub(fast_server, registry)
    latencies: list[float] = []
    try:
        with futures.ThreadPoolExecutor(4) as pool:
            start = time.monotonic()

            def fast_task() -> None:
                fast.GetMe(identity_pb2.GetMeRequest(), timeout=10)
                latencies.append(time.monotonic() - start)

            def slow_task() -> None:
                try:
                    slow.GetMe(identity_pb2.GetMeRequest(), timeout=10)
                except grpc.RpcError as error:
                    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

            for index in range(24):
                pool.submit(fast_task if index % 3 == 2 else slow_task)
    finally:
        slow_server.stop(0)
        fast_server.stop(0)
    return latencies


def test_a_bulkhead_keeps_a_slow_downstream_from_taking_every_thread() -> None:
    unbounded = _fast_latencies(bulkhead=1000)
    bounded = _fast_latencies(bulkhead=1)
    assert len(bounded) == len(unbounded) == 8
    # Unbounded: the 4 threads sit in slow calls, and the fast tasks wait behind rounds of them
    # (16 slow calls of 0.3 s over 4 threads: 1.2 s). Bounded: one slow call at a time, the
    # rest refused at once, and the other three threads serve the fast tasks.
    assert statistics.median(unbounded) > 0.4, unbounded
    assert statistics.median(bounded) < statistics.median(unbounded) / 4, (bounded, unbounded)


def test_every_call_gets_a_deadline_and_no_more_than_the_budget_left(
    flaky: tuple[Flaky, MeshServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    servicer, server = flaky
    client = stub(server, Downstreams(NO_BREAKER))
    monkeypatch.setenv("MESH_DEADLINE_S", "2")
    client.GetMe(identity_pb2.GetMeRequest())  # no timeout given
    client.Register.future(identity_pb2.RegisterRequest()).result()
    with deadlines.bound(0.3):  # as inside a handler whose caller left it 300 ms
        client.GetMe(identity_pb2.GetMeRequest(), timeout=10)
    first, second, third = servicer.remaining
    # gRPC's core rounds the grpc-timeout header up, by under 1 %, so it compresses well.
    assert first is not None and 1.0 < first <= 2.0 * 1.01
    assert second is not None and 1.0 < second <= 2.0 * 1.01
    assert third is not None and third <= 0.3 * 1.01
    with deadlines.bound(0.0):  # a spent budget: not sent at all
        assert code_of(lambda: client.GetMe(identity_pb2.GetMeRequest(), timeout=10)) == (
            grpc.StatusCode.DEADLINE_EXCEEDED
        )
    assert len(servicer.remaining) == 3


def test_a_call_to_a_hung_server_without_a_timeout_ends_at_the_mesh_default(
    flaky: tuple[Flaky, MeshServer], monkeypatch: pytest.MonkeyPatch
) -> None:
    servicer, server = flaky
    client = stub(server, Downstreams(NO_BREAKER))
    monkeypatch.setenv("MESH_DEADLINE_S", "0.3")
    servicer.delay = 30
    start = time.monotonic()
    assert code_of(lambda: client.Register(identity_pb2.RegisterRequest())) == (
        grpc.StatusCode.DEADLINE_EXCEEDED
    )
    assert time.monotonic() - start < 5


def test_round_robin_spreads_over_replicas_and_skips_a_dead_one() -> None:
    first, second = new_flaky(), new_flaky()
    servers = [serve(first, "replica-1"), serve(second, "replica-2")]
    try:
        target = ",".join(f"127.0.0.1:{s.port}" for s in servers)
        client = stub(servers[0], Downstreams(NO_BREAKER), target=target)
        for _ in range(20):
            client.GetMe(identity_pb2.GetMeRequest(), timeout=5)
        assert first.attempts[GET_ME] >= 5 and second.attempts[GET_ME] >= 5
        servers[1].stop(0)
        failures = 0
        for _ in range(20):  # Register is not retried: a failure would show
            try:
                client.Register(identity_pb2.RegisterRequest(), timeout=5)
            except grpc.RpcError:
                failures += 1
        assert failures <= 1
        assert first.attempts[REGISTER] >= 19
    finally:
        for server in servers:
            server.stop(0)


def test_a_not_serving_replica_is_skipped() -> None:
    first, second = new_flaky(), new_flaky()
    servers = [serve(first, "replica-1"), serve(second, "replica-2")]
    try:
        target = ",".join(f"127.0.0.1:{s.port}" for s in servers)
        client = stub(servers[0], Downstreams(NO_BREAKER), target=target)
        client.GetMe(identity_pb2.GetMeRequest(), timeout=5)
        servers[1].set_serving("", False)
        deadline = time.monotonic() + 5
        while True:  # the health watch reaches the client's balancer
            before = second.attempts[GET_ME]
            for _ in range(10):
                client.GetMe(identity_pb2.GetMeRequest(), timeout=5)
            if second.attempts[GET_ME] == before:
                break
            assert time.monotonic() < deadline, "the NOT_SERVING replica kept getting calls"
    finally:
        for server in servers:
            server.stop(0)


def test_a_service_shows_its_peers_breakers_in_its_health(
    flaky: tuple[Flaky, MeshServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    servicer, peer_server = flaky
    peer = f"peer_{uuid.uuid4().hex[:8]}"  # the process's breakers outlive a test: a new name
    monkeypatch.setenv(env_key(peer), f"127.0.0.1:{peer_server.port}")
    channels: list[grpc.Channel] = []

    def build(ctx: ServiceContext[ServiceSettings]) -> list[object]:
        channels.append(ctx.connect(peer))
        return []

    service: Service[ServiceSettings] = Service("front", build)  # type: ignore[arg-type]
    settings = service.load_settings({"FRONT_PORT": "0", "FRONT_DB_PATH": str(tmp_path / "f.db")})
    server = service.create(settings)
    port = server.start()
    name = resilience.HEALTH_PREFIX + peer
    try:
        health = health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))

        def shown() -> int:
            request = health_pb2.HealthCheckRequest(service=name)
            return int(health.Check(request, timeout=5).status)

        assert shown() == health_pb2.HealthCheckResponse.SERVING
        servicer.failing = True
        client = identity_pb2_grpc.IdentityServiceStub(channels[0])
        token = (("authorization", "Bearer any"),)  # (else the kit fetches front's own)
        for _ in range(resilience.downstreams().limits.min_calls):
            code_of(
                lambda: client.Register(identity_pb2.RegisterRequest(), timeout=5, metadata=token)
            )
        assert shown() == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.stop(0)


def test_a_trial_call_waits_for_the_peer_to_be_reachable_again() -> None:
    """A peer that was down for a while comes back: the half-open breaker's trial call waits
    (within its deadline) for the channel to reconnect, instead of failing at once because the
    channel is still in its reconnect backoff (grown to a second or two by then), which would
    keep the breaker open another open_s for nothing."""
    servicer = new_flaky()
    server = serve(servicer)
    port = server.port
    registry = Downstreams(Limits(window=4, min_calls=2, open_s=2.0, half_open_calls=1))
    client = stub(server, registry)
    client.GetMe(identity_pb2.GetMeRequest(), timeout=5)
    server.stop(0)
    downstream = f"127.0.0.1:{port}"
    while registry.states()[downstream] is not State.OPEN:  # bounded: each call fails at once
        code_of(lambda: client.Register(identity_pb2.RegisterRequest(), timeout=5))
    deadline = time.monotonic() + 5
    while registry.states()[downstream] is State.OPEN:  # the outage lasts open_s
        assert time.monotonic() < deadline
        threading.Event().wait(0.02)  # poll interval within the deadline loop
    revived = create_server(
        "flaky",
        ServerSettings(port=port, grace_seconds=0),
        [
            ServiceBinding(
                servicer,
                identity_pb2_grpc.add_IdentityServiceServicer_to_server,
                "shop.identity.v1.IdentityService",
            )
        ],
    )
    revived.start()
    try:
        # The first call now is the trial: it must succeed, not fail in the backoff.
        assert client.Register(identity_pb2.RegisterRequest(), timeout=5).user_id == "u2"
        assert registry.states()[downstream] is State.CLOSED
    finally:
        revived.stop(0)


class Front(identity_pb2_grpc.IdentityServiceServicer):
    """A server on the kit whose GetMe asks its peer (another kit server) through a kit
    channel, passing no timeout of its own: what the peer gets is the budget the kit passes."""

    def __init__(self, peer: grpc.Channel) -> None:
        self._peer = identity_pb2_grpc.IdentityServiceStub(peer)

    def GetMe(
        self, request: identity_pb2.GetMeRequest, context: grpc.ServicerContext
    ) -> identity_pb2.GetMeResponse:
        return self._peer.GetMe(request, timeout=30)  # asks for more than it has left


def test_a_server_never_calls_downstream_with_more_than_its_request_has_left(
    flaky: tuple[Flaky, MeshServer],
) -> None:
    back, back_server = flaky
    peer = connect(f"127.0.0.1:{back_server.port}", downstreams=Downstreams(NO_BREAKER))
    front = Front(peer)  # type: ignore[abstract]  # only GetMe is asked
    front_server = create_server(
        "front",
        ServerSettings(port=0, grace_seconds=0),
        [
            ServiceBinding(
                front,
                identity_pb2_grpc.add_IdentityServiceServicer_to_server,
                "shop.identity.v1.IdentityService",
            )
        ],
    )
    front_server.start()
    try:
        client = stub(front_server, Downstreams(NO_BREAKER))
        client.GetMe(identity_pb2.GetMeRequest(), timeout=0.3)
        client.GetMe(identity_pb2.GetMeRequest(), timeout=3)
        budget_short, budget_long = back.remaining
        assert budget_short is not None and budget_short <= 0.3 * 1.01
        assert budget_long is not None and 0.3 < budget_long <= 3 * 1.01
    finally:
        front_server.stop(0)
        peer.close()


def test_a_replica_that_answers_but_fails_is_ejected() -> None:
    """Outlier detection: a replica that is SERVING but fails every call (a broken disk, say)
    is taken out of the balance within a couple of seconds; health checking alone would keep
    sending it half the calls."""
    good, sick = new_flaky(), new_flaky()
    servers = [serve(good, "replica-1"), serve(sick, "replica-2")]
    sick.failing = True
    try:
        target = ",".join(f"127.0.0.1:{s.port}" for s in servers)
        client = stub(servers[0], Downstreams(NO_BREAKER), target=target)
        deadline = time.monotonic() + 10
        while True:  # Register is not retried: each call lands on one replica
            before = sick.attempts[REGISTER]
            failed = 0
            for _ in range(20):
                try:
                    client.Register(identity_pb2.RegisterRequest(), timeout=5)
                except grpc.RpcError:
                    failed += 1
            if sick.attempts[REGISTER] == before:
                break
            assert time.monotonic() < deadline, "the failing replica kept getting calls"
            threading.Event().wait(0.2)  # the ejection runs every second
        assert failed == 0 and good.attempts[REGISTER] >= 20
    finally:
        for server in servers:
            server.stop(0)
