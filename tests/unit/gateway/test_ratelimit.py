"""The gateway's rate limiter: token-bucket arithmetic on a fake clock, the RateLimit headers of
draft-ietf-httpapi-ratelimit-headers-11, limits per route and per key, configuration errors, and
the issue's claim about replicas: per replica with MemoryStore, one count with SqliteStore (two
real processes on one file). The store tests run against both stores."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import gateway.ratelimit
from gateway.ratelimit import (
    Decision,
    Limits,
    MemoryStore,
    Policy,
    RateLimiter,
    SqliteStore,
    Store,
)

ORDERS = "POST /v1/orders"
LIST = "GET /v1/orders"
DEFAULT = Policy("default", 100, 60.0)
WRITES = Policy("orders-write", 10, 60.0)


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["memory", "sqlite"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], MemoryStore | SqliteStore]]:
    """A factory of stores of one kind; for SQLite every store made opens the same file, as
    replicas on one host would."""
    opened: list[SqliteStore] = []

    def make() -> MemoryStore | SqliteStore:
        if request.param == "memory":
            return MemoryStore()
        store = SqliteStore(tmp_path / "ratelimits.db")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


@pytest.fixture
def store(make_store: Callable[[], MemoryStore | SqliteStore]) -> MemoryStore | SqliteStore:
    return make_store()


def limiter(
    store: Store, clock: FakeClock, *policies: Policy, route: dict[str, list[Policy]] | None = None
) -> RateLimiter:
    return RateLimiter(Limits(list(policies) or [DEFAULT], route or {}), store, clock=clock)


# --- bucket arithmetic ----------------------------------------------------------------------


def test_a_burst_up_to_capacity_is_admitted_then_refused(store: Store) -> None:
    clock = FakeClock()
    rl = limiter(store, clock, Policy("default", 10, 60.0))
    decisions = [rl.check(LIST, ["client:shop-web"]) for _ in range(11)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert [d.remaining for d in decisions] == [9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 0]


def test_the_bucket_refills_over_time_and_retry_after_says_when(store: Store) -> None:
    # 10 tokens per 60 s: one token every 6 s.
    clock = FakeClock()
    rl = limiter(store, clock, Policy("default", 10, 60.0))
    for _ in range(10):
        assert rl.check(LIST, ["client:a"]).allowed
    refused = rl.check(LIST, ["client:a"])
    assert not refused.allowed
    assert refused.retry_after == pytest.approx(6.0)

    clock.advance(4.5)
    later = rl.check(LIST, ["client:a"])
    assert not later.allowed
    assert later.retry_after == pytest.approx(1.5)

    clock.advance(1.5)  # exactly one token has dripped in
    assert rl.check(LIST, ["client:a"]).allowed
    assert not rl.check(LIST, ["client:a"]).allowed

    clock.advance(30.0)  # five more
    assert [rl.check(LIST, ["client:a"]).allowed for _ in range(6)] == [True] * 5 + [False]

    clock.advance(3_600.0)  # an hour idle refills to capacity, not beyond
    assert [rl.check(LIST, ["client:a"]).allowed for _ in range(11)] == [True] * 10 + [False]


def test_refused_requests_do_not_push_the_next_token_back(store: Store) -> None:
    clock = FakeClock()
    rl = limiter(store, clock, Policy("default", 1, 10.0))
    assert rl.check(LIST, ["ip:10.0.0.1"]).allowed
    for _ in range(5):
        clock.advance(1.0)
        assert not rl.check(LIST, ["ip:10.0.0.1"]).allowed
    clock.advance(5.0)
    assert rl.check(LIST, ["ip:10.0.0.1"]).allowed


def test_a_clock_reading_behind_the_stored_one_refills_nothing(store: Store) -> None:
    """Replicas read the clock before they get the write lock, so the one that writes second may
    carry the earlier time. That must not refill the same interval twice."""
    policy = Policy("default", 10, 10.0)
    for _ in range(10):
        assert store.take("client:a", policy, 100.0)[0]
    assert store.take("client:a", policy, 100.5) == (False, 0.5, 0.5)
    assert store.take("client:a", policy, 100.2) == (False, 0.5, 0.5)
    assert store.take("client:a", policy, 101.0)[0]  # 100.5 -> 101: half a token more
    assert not store.take("client:a", policy, 101.0)[0]


def test_a_clock_set_back_further_than_a_window_does_not_freeze_the_bucket(store: Store) -> None:
    policy = Policy("default", 2, 10.0)
    assert store.take("client:a", policy, 10_000.0)[0]
    assert store.take("client:a", policy, 10_000.0)[0]
    assert not store.take("client:a", policy, 500.0)[0]  # set back: nothing refilled
    assert store.take("client:a", policy, 505.0)[0]  # and it counts on from the new time


def test_remaining_and_the_effective_window_follow_the_bucket() -> None:
    clock = FakeClock()
    rl = limiter(MemoryStore(), clock, Policy("default", 100, 60.0))  # a token every 0.6 s
    first = rl.check(LIST, ["client:a"])
    assert (first.remaining, first.reset_seconds, first.retry_after) == (99, 0.6, 0.0)
    clock.advance(0.3)
    second = rl.check(LIST, ["client:a"])  # 99.5 - 1 tokens: 98 whole, the 99th in 0.3 s
    assert second.remaining == 98
    assert second.reset_seconds == pytest.approx(0.3)


# --- headers --------------------------------------------------------------------------------


def test_headers_of_an_allowed_request_are_the_drafts_structured_fields() -> None:
    clock = FakeClock()
    rl = limiter(MemoryStore(), clock, DEFAULT)
    decision = rl.check(LIST, ["client:a"])
    # draft-ietf-httpapi-ratelimit-headers-11 section 3.2: RateLimit-Policy: "default";q=100;w=10
    # and section 4.2: RateLimit: "default";r=50;t=30; no Retry-After when not throttled.
    assert decision.headers() == [
        ("RateLimit-Policy", '"default";q=100;w=60'),
        ("RateLimit", '"default";r=99;t=1'),
    ]


def test_headers_of_a_refusal_carry_retry_after_no_earlier_than_the_window() -> None:
    clock = FakeClock()
    rl = limiter(MemoryStore(), clock, Policy("burst", 2, 15.0))  # a token every 7.5 s
    rl.check(LIST, ["client:a"])
    rl.check(LIST, ["client:a"])
    clock.advance(1.0)
    refused = rl.check(LIST, ["client:a"])
    assert refused.retry_after == pytest.approx(6.5)
    # Retry-After is delay-seconds, rounded up; the draft's section 6: not before the end of the
    # effective window, which here is the same moment.
    assert refused.headers() == [
        ("RateLimit-Policy", '"burst";q=2;w=15'),
        ("RateLimit", '"burst";r=0;t=7'),
        ("Retry-After", "7"),
    ]


@pytest.mark.parametrize(
    ("retry_after", "header"), [(0.0001, "1"), (1.0, "1"), (6.000000000001, "6"), (6.2, "7")]
)
def test_retry_after_is_whole_seconds_rounded_up_and_at_least_one(
    retry_after: float, header: str
) -> None:
    decision = Decision(False, DEFAULT, 0, retry_after, retry_after)
    assert dict(decision.headers())["Retry-After"] == header


def test_a_sub_second_window_is_advertised_as_one_second() -> None:
    # The draft's w is a non-zero integer of seconds (section 3.1.3).
    decision = Decision(True, Policy("tight", 5, 0.5), 4, 0.1, 0.0)
    assert dict(decision.headers())["RateLimit-Policy"] == '"tight";q=5;w=1'


# --- keys and routes ------------------------------------------------------------------------


def test_keys_have_buckets_of_their_own(store: Store) -> None:
    clock = FakeClock()
    rl = limiter(store, clock, Policy("default", 3, 60.0))
    assert [rl.check(LIST, ["client:a"]).allowed for _ in range(4)] == [True] * 3 + [False]
    assert [rl.check(LIST, ["client:b"]).allowed for _ in range(3)] == [True] * 3
    assert rl.check(LIST, ["ip:192.0.2.7"]).allowed


def test_a_route_has_its_own_policies_on_top_of_the_default(store: Store) -> None:
    clock = FakeClock()
    rl = limiter(store, clock, DEFAULT, route={ORDERS: [WRITES]})
    writes = [rl.check(ORDERS, ["client:a"]) for _ in range(11)]
    assert [d.allowed for d in writes] == [True] * 10 + [False]
    assert writes[0].policy == WRITES  # 9 left of 10 is closer to refusing than 99 of 100
    assert writes[-1].policy == WRITES
    # Reads still pass: the orders-write bucket is only POST /v1/orders'; the default one has
    # spent 10 (a refused request spends none).
    read = rl.check(LIST, ["client:a"])
    assert read.allowed
    assert (read.policy, read.remaining) == (DEFAULT, 89)


def test_the_default_bucket_counts_every_route_of_a_key(store: Store) -> None:
    clock = FakeClock()
    rl = limiter(store, clock, Policy("default", 5, 60.0), route={ORDERS: [WRITES]})
    for _ in range(3):
        assert rl.check(LIST, ["client:a"]).allowed
    assert [rl.check(ORDERS, ["client:a"]).allowed for _ in range(3)] == [True, True, False]
    refused = rl.check(ORDERS, ["client:a"])
    assert refused.policy.name == "default"


def test_every_key_must_pass_and_a_refusal_spends_no_token_elsewhere(store: Store) -> None:
    clock = FakeClock()
    rl = limiter(store, clock, Policy("default", 5, 60.0))
    for _ in range(5):
        assert rl.check(LIST, ["client:shop-web", "user:alice"]).allowed
    # shop-web is spent, so bob on shop-web is refused although bob has spent nothing...
    for _ in range(20):
        assert not rl.check(LIST, ["client:shop-web", "user:bob"]).allowed
    # ...and those refusals took nothing from bob: on another app he still has all five.
    bob = [rl.check(LIST, ["client:other", "user:bob"]) for _ in range(6)]
    assert [d.allowed for d in bob] == [True] * 5 + [False]
    assert bob[-1].policy.name == "default"


def test_a_refused_user_does_not_drain_the_shared_client_bucket(store: Store) -> None:
    clock = FakeClock()
    rl = limiter(
        store, clock, Policy("default", 100, 60.0), route={ORDERS: [Policy("orders-write", 2, 60)]}
    )
    assert rl.check(ORDERS, ["client:shop-web", "user:alice"]).allowed
    assert rl.check(ORDERS, ["client:shop-web", "user:alice"]).allowed
    for _ in range(20):
        assert not rl.check(ORDERS, ["client:shop-web", "user:alice"]).allowed
    # shop-web's orders-write bucket is empty too (alice spent it), but the twenty refusals took
    # nothing from its default bucket: 98 after alice's two, 97 after this read.
    reading = rl.check(LIST, ["client:shop-web"])
    assert (reading.policy.name, reading.remaining) == ("default", 97)


def test_a_refusal_reports_the_bucket_that_needs_the_longest_wait() -> None:
    clock = FakeClock()
    fast = Policy("default", 1, 1.0)  # a token a second
    slow = Policy("orders-write", 1, 60.0)  # a token a minute
    rl = limiter(MemoryStore(), clock, fast, route={ORDERS: [slow]})
    assert rl.check(ORDERS, ["client:a"]).allowed
    refused = rl.check(ORDERS, ["client:a"])
    assert (refused.allowed, refused.policy, refused.retry_after) == (False, slow, 60.0)


def test_an_allowed_request_reports_the_bucket_with_the_fewest_tokens_left() -> None:
    clock = FakeClock()
    rl = limiter(MemoryStore(), clock, DEFAULT)
    for _ in range(30):
        rl.check(LIST, ["user:alice"])
    decision = rl.check(LIST, ["client:shop-web", "user:alice"])
    assert decision.allowed
    assert decision.remaining == 69  # alice's 69, not shop-web's 99


def test_a_key_given_twice_counts_once() -> None:
    rl = limiter(MemoryStore(), FakeClock(), DEFAULT)
    assert rl.check(LIST, ["user:alice", "user:alice"]).remaining == 99


def test_a_check_needs_a_key() -> None:
    rl = limiter(MemoryStore(), FakeClock(), DEFAULT)
    with pytest.raises(ValueError, match="at least one key"):
        rl.check(LIST, [])


# --- configuration --------------------------------------------------------------------------

CONFIG = """
[[default]]
name = "default"
capacity = 100
per_seconds = 60

[[default]]
name = "daily"
capacity = 10000
per_seconds = 86400

[[route."POST /v1/orders"]]
name = "orders-write"
capacity = 10
per_seconds = 60

[[route."PUT /v1/stock/{sku}"]]
name = "stock-write"
capacity = 5
per_seconds = 30.5
"""


def test_the_configuration_reads_defaults_and_routes() -> None:
    limits = Limits.from_toml(CONFIG)
    daily = Policy("daily", 10_000, 86_400.0)
    assert limits.default == [DEFAULT, daily]
    assert limits.policies_for(ORDERS) == [DEFAULT, daily, WRITES]
    assert limits.policies_for("PUT /v1/stock/{sku}") == [
        DEFAULT,
        daily,
        Policy("stock-write", 5, 30.5),
    ]
    assert limits.policies_for("GET /v1/orders/{order_id}") == [DEFAULT, daily]
    assert isinstance(limits.default[0].per_seconds, float)


def test_the_shipped_configuration_is_valid_and_generous() -> None:
    path = Path(gateway.ratelimit.__file__).with_name("ratelimits.toml")
    limits = Limits.from_toml(path.read_text(encoding="utf-8"))
    assert limits.default == [Policy("default", 600, 60.0)]
    assert limits.routes == {
        "POST /v1/orders": [Policy("orders-write", 60, 60.0)],
        "PUT /v1/stock/{sku}": [Policy("stock-write", 30, 60.0)],
    }


def extra(where: str, body: str) -> str:
    """A valid [[default]] policy, then one more table ``where`` with ``body``."""
    return f"[[default]]\nname = 'default'\ncapacity = 1\nper_seconds = 1\n\n[[{where}]]\n{body}\n"


def sized(name: str = "b", capacity: str = "1", per_seconds: str = "1") -> str:
    return f"name = {name}\ncapacity = {capacity}\nper_seconds = {per_seconds}"


POST = 'route."POST /v1/orders"'
ERRORS = [
    ("[[default]]\nname = ", "not valid TOML"),
    ("", "default: at least one"),
    ("[limits]\nx = 1\n" + extra("default", sized("'b'")), "limits: unknown key"),
    ("default = 3", "default: must be an array of tables"),
    ("route = 3\n" + extra("default", sized("'b'")), "route: must be tables"),
    (extra("default", "name = 'b'\ncapacity = 1"), r"default\[1\]\.per_seconds: missing"),
    (extra("default", sized("'b'") + "\ncapcity = 2"), r"default\[1\]\.capcity: unknown key"),
    (extra("default", sized("'b'", "0")), r"default\[1\]\.capacity must be at least 1"),
    (extra("default", sized("'b'", "1.5")), r"default\[1\]\.capacity must be an integer"),
    (extra("default", sized("'b'", "true")), r"default\[1\]\.capacity must be an integer"),
    (extra("default", sized("'b'", "1", "0")), r"default\[1\]\.per_seconds must be a positive"),
    (extra("default", sized("'b'", "1", "'60'")), r"default\[1\]\.per_seconds must be a number"),
    (extra("default", sized("'b'", "1", "inf")), r"default\[1\]\.per_seconds must be a positive"),
    (extra("default", sized('"a \\"b\\""')), r"default\[1\]\.name must be"),
    (extra("default", sized("'default'")), "default: policy 'default' is listed twice"),
    (
        extra(POST, sized("'w'", "-1")),
        r'route\."POST /v1/orders"\[0\]\.capacity must be at least 1',
    ),
    (extra('route."post /v1/orders"', sized("'w'")), 'route."post /v1/orders": a route is named'),
    (extra('route."POST v1/orders"', sized("'w'")), 'route."POST v1/orders": a route is named'),
    (extra(POST, sized("'default'")), r"\"POST /v1/orders\": policy 'default' is already a \[\["),
    (extra("default", sized("'b'")) + "[route]\n'POST /v1/orders' = []\n", "needs at least one"),
    (
        extra(POST, sized("'w'")) + "[[route.'PUT /v1/stock/{sku}']]\n" + sized("'w'", "2"),
        r"\"PUT /v1/stock/\{sku\}\": policy 'w' is capacity=2.*\"POST /v1/orders\" gives it",
    ),
]


@pytest.mark.parametrize(("text", "message"), ERRORS)
def test_configuration_errors_name_the_key(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Limits.from_toml(text)


def test_routes_may_share_a_named_bucket_of_one_size() -> None:
    shared = Policy("writes", 3, 60.0)
    limits = Limits([DEFAULT], {ORDERS: [shared], "PUT /v1/stock/{sku}": [shared]})
    rl = RateLimiter(limits, MemoryStore(), clock=FakeClock())
    assert rl.check(ORDERS, ["client:a"]).allowed
    assert rl.check("PUT /v1/stock/{sku}", ["client:a"]).allowed
    assert rl.check(ORDERS, ["client:a"]).allowed
    assert not rl.check("PUT /v1/stock/{sku}", ["client:a"]).allowed


# --- stores: concurrency, memory, replicas ------------------------------------------------


def test_threads_hammering_one_key_never_over_admit(store: Store) -> None:
    # Switch threads every microsecond instead of every 5 ms, so that an unlocked
    # read-refill-write would be interrupted midway often enough to show (it does, without the
    # lock: some hundreds over).
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    policy = Policy("default", 2_000, 3_600.0)
    admitted: list[int] = []
    start = threading.Barrier(8)

    def hammer() -> None:
        start.wait()
        admitted.append(sum(store.take("client:shop-web", policy, 1_000.0)[0] for _ in range(300)))

    try:
        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sys.setswitchinterval(previous)
    assert len(admitted) == 8
    assert sum(admitted) == 2_000  # 2400 attempts, a frozen clock: exactly the capacity


def test_buckets_idle_for_a_whole_window_are_dropped_without_changing_answers(
    store: MemoryStore | SqliteStore,
) -> None:
    short = Policy("default", 2, 10.0)
    long = Policy("daily", 2, 1_000.0)
    store.take("client:a", short, 0.0)
    store.take("client:b", long, 0.0)
    assert len(store) == 2
    # Sweeps run at most once a minute of the callers' clock; at 100 s "a" has refilled (10 s)
    # and goes, "b" (1000 s) is still counting and stays.
    assert store.take("client:c", short, 100.0)[0]
    assert len(store) == 2  # b and c
    assert store.take("client:b", long, 100.0)[1] == pytest.approx(1.2 - 1)  # 1 + 0.2 refilled
    assert store.take("client:a", short, 100.0)[1] == 1.0  # a fresh, full bucket


def test_a_refund_never_lifts_a_bucket_past_capacity(store: Store) -> None:
    policy = Policy("default", 2, 60.0)
    store.refund("client:a", policy, 0.0)  # no bucket yet: nothing to give back
    assert store.take("client:a", policy, 0.0)[1] == 1.0
    store.refund("client:a", policy, 0.0)
    store.refund("client:a", policy, 0.0)
    assert store.take("client:a", policy, 0.0)[1] == 1.0


def test_replicas_each_admit_the_limit_unless_the_store_is_shared(
    make_store: Callable[[], MemoryStore | SqliteStore], request: pytest.FixtureRequest
) -> None:
    """The issue: "with several gateway replicas the limit is per replica unless a shared store
    is configured". Two replicas, each its own store object: two MemoryStores are two counts;
    two SqliteStores on one file are one."""
    clock = FakeClock()
    replicas = [limiter(make_store(), clock, Policy("default", 20, 60.0)) for _ in range(2)]
    admitted = sum(
        replica.check(LIST, ["client:shop-web"]).allowed for _ in range(30) for replica in replicas
    )
    shared = request.node.callspec.params["make_store"] == "sqlite"
    assert admitted == (20 if shared else 40)


_CHILD = """
import sys
from gateway.ratelimit import Limits, Policy, RateLimiter, SqliteStore

path, capacity, attempts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = SqliteStore(path)
limiter = RateLimiter(Limits([Policy("default", capacity, 3600.0)]), store, clock=lambda: 1000.0)
print("ready", flush=True)
sys.stdin.readline()  # the parent releases every replica at once
print(sum(limiter.check("GET /v1/orders", ["client:shop-web"]).allowed for _ in range(attempts)))
store.close()
"""


def test_two_processes_sharing_a_sqlite_store_never_admit_more_than_capacity(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "shared.db")
    source = str(Path(gateway.ratelimit.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, path, "1000", "600"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for replica in replicas:
            assert replica.stdout is not None
            assert replica.stdout.readline().strip() == "ready"
        for replica in replicas:  # release both before reading either: they run together
            assert replica.stdin is not None
            replica.stdin.write("go\n")
            replica.stdin.flush()
        outputs = [replica.communicate(timeout=60) for replica in replicas]
    finally:
        for replica in replicas:
            if replica.poll() is None:
                replica.kill()
                replica.wait()
    assert [replica.returncode for replica in replicas] == [0, 0], [err for _, err in outputs]
    # 1200 attempts on a frozen clock (no refill): the capacity, exactly, shared between them.
    # The capacity is most of the attempts, so the replicas contend for the whole run.
    assert sum(int(out) for out, _ in outputs) == 1_000
