"""meshkit.control.flags through the OpenFeature client, as a service calls it: the reasons
(STATIC, TARGETING_MATCH, SPLIT, DISABLED, DEFAULT, ERROR), a missing targeting key answered
with the default and TARGETING_KEY_MISSING (never an exception), metadata merged, readiness
(no flag set: PROVIDER_NOT_READY; the last known good counts), the configuration-changed event
with the changed keys, bucketing that is the same in another process and splits as weighted,
parse_flag_set refusing a bad set by flag and field, and ``ctx.flags`` in a kit service."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ProviderNotReadyError
from openfeature.provider import ProviderStatus
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.mesh import free_port

from meshkit.control import (
    ConfigRejected,
    LiveConfig,
    MeshFlagProvider,
    Snapshot,
    parse_flag_set,
    static_source,
)
from meshkit.control.flags import EMPTY_FLAG_SET
from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext
from meshkit.settings import ServiceSettings

ON_OFF = {"on": True, "off": False}
FLAG_SET: dict[str, Any] = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "metadata": {"flagSetId": "shop", "version": "7"},
    "flags": {
        "banner": {"state": "ENABLED", "variants": ON_OFF, "defaultVariant": "off"},
        "beta": {
            "state": "ENABLED",
            "variants": ON_OFF,
            "defaultVariant": "off",
            "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on"]},
            "metadata": {"version": "8", "owner": "growth"},
        },
        "express": {  # the shop's shape: a country, then a 20 % rollout by targeting key
            "state": "ENABLED",
            "variants": ON_OFF,
            "defaultVariant": "off",
            "targeting": {
                "if": [
                    {"in": [{"var": "country"}, ["DE", "FR"]]},
                    {"fractional": [["on", 20], ["off", 80]]},
                    "off",
                ]
            },
        },
        "by-key": {
            "state": "ENABLED",
            "variants": {"vip": "vip", "other": "other"},
            "defaultVariant": "other",
            "targeting": {"if": [{"==": [{"var": "targetingKey"}, "u-1"]}, "vip", "other"]},
        },
        "anonymous-ok": {
            "state": "ENABLED",
            "variants": {"anon": "anon", "known": "known"},
            "defaultVariant": "known",
            "targeting": {"if": [{"==": [{"var": ["targetingKey", ""]}, ""]}, "anon", "known"]},
        },
        "by-email": {  # explicit bucketing value: no targeting key needed
            "state": "ENABLED",
            "variants": {"a": "a", "b": "b"},
            "defaultVariant": "a",
            "targeting": {"fractional": [{"var": "email"}, ["a", 50], ["b", 50]]},
        },
        "off-flag": {"state": "DISABLED", "variants": ON_OFF, "defaultVariant": "on"},
        "broken": {
            "state": "ENABLED",
            "variants": {"one": 1, "two": 2},
            "defaultVariant": "one",
            "targeting": {"/": [1, 0]},
        },
    },
}


def client_of(provider: MeshFlagProvider) -> OpenFeatureClient:
    """``provider`` bound to a domain of its own (the process's default provider is untouched)."""
    domain = f"test-{uuid.uuid4().hex[:8]}"
    with contextlib.suppress(ProviderNotReadyError):  # bound all the same, status ERROR
        api.set_provider_and_wait(provider, domain)
    return api.get_client(domain)


@pytest.fixture
def flags() -> Iterator[OpenFeatureClient]:
    yield client_of(MeshFlagProvider(static_source(FLAG_SET)))
    api.clear_providers()


def ctx(key: str | None = None, **attributes: Any) -> EvaluationContext:
    return EvaluationContext(key, attributes)


def test_reasons_are_flagds_plus_split(flags: OpenFeatureClient) -> None:
    static = flags.get_boolean_details("banner", True)
    assert (static.value, static.variant, static.reason) == (False, "off", "STATIC")
    matched = flags.get_boolean_details("beta", False, ctx("u", email="ann@example.com"))
    assert (matched.value, matched.reason) == (True, "TARGETING_MATCH")
    unmatched = flags.get_boolean_details("beta", True, ctx("u", email="ann@else.org"))
    assert (unmatched.value, unmatched.variant, unmatched.reason) == (False, "off", "DEFAULT")
    disabled = flags.get_boolean_details("off-flag", False)
    assert (disabled.value, disabled.reason) == (False, "DISABLED")
    # A fractional chose: SPLIT, whichever way it went; targeting that skipped it: not SPLIT.
    split = [
        flags.get_boolean_details("express", False, ctx(f"c-{n}", country="DE")) for n in range(20)
    ]
    assert {d.reason for d in split} == {"SPLIT"} and {d.value for d in split} == {True, False}
    elsewhere = flags.get_boolean_details("express", True, ctx("c-1", country="US"))
    assert (elsewhere.value, elsewhere.reason) == (False, "TARGETING_MATCH")
    by_email = flags.get_string_details("by-email", "x", ctx(None, email="ann@example.com"))
    assert by_email.reason == "SPLIT" and by_email.value in ("a", "b")


def test_each_evaluation_is_an_event_on_the_current_span(flags: OpenFeatureClient) -> None:
    """OpenTelemetry's feature-flag semantic conventions: key, provider, variant, reason, flag
    set and version, error type; never the value. Outside a recording span: nothing."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    flags.get_boolean_value("express", False, ctx("c-1", country="DE"))  # no span: no event
    with tracer.start_as_current_span("checkout"):
        flags.get_boolean_value("express", False, ctx("c-1", country="DE"))
        flags.get_boolean_value("express", False, ctx(None, country="DE"))
    (span,) = exporter.get_finished_spans()
    split, missing = span.events
    assert split.name == "feature_flag.evaluation"
    assert dict(split.attributes or {}) == {
        "feature_flag.key": "express",
        "feature_flag.provider.name": "meshkit",
        "feature_flag.result.variant": flags.get_boolean_details(
            "express", False, ctx("c-1", country="DE")
        ).variant,
        "feature_flag.result.reason": "split",
        "feature_flag.set.id": "shop",
        "feature_flag.version": "7",
    }
    assert (missing.attributes or {})["error.type"] == "TARGETING_KEY_MISSING"
    assert (missing.attributes or {})["feature_flag.result.reason"] == "error"


def test_a_missing_targeting_key_gives_the_default_with_targeting_key_missing(
    flags: OpenFeatureClient,
) -> None:
    missing = [
        flags.get_boolean_details("express", True, ctx(None, country="DE")),  # the shorthand
        flags.get_boolean_details("express", True, ctx("", country="FR")),  # empty is none
        flags.get_string_details("by-key", "dflt", ctx(None)),  # {"var": "targetingKey"}
    ]
    for details, default in zip(missing, [True, True, "dflt"], strict=True):
        assert (details.value, details.reason, details.error_code) == (
            default,
            "ERROR",
            "TARGETING_KEY_MISSING",
        ), details
        assert details.flag_key in (details.error_message or "")
    # Targeting that never reads the key, or reads it with a default of its own, needs none.
    assert flags.get_boolean_details("express", True, ctx(None, country="US")).reason == (
        "TARGETING_MATCH"
    )
    assert flags.get_string_value("anonymous-ok", "x", ctx(None)) == "anon"
    assert flags.get_string_details("by-email", "x", ctx(None, email="a@b.c")).error_code is None


def test_metadata_is_the_flag_sets_merged_with_the_flags(flags: OpenFeatureClient) -> None:
    assert flags.get_boolean_details("banner", False).flag_metadata == {
        "flagSetId": "shop",
        "version": "7",
    }
    assert flags.get_boolean_details("beta", False, ctx("u")).flag_metadata == {
        "flagSetId": "shop",
        "version": "8",
        "owner": "growth",
    }


def test_evaluation_never_raises(flags: OpenFeatureClient) -> None:
    missing = flags.get_boolean_details("no-such-flag", True)
    assert (missing.value, missing.reason, missing.error_code) == (True, "ERROR", "FLAG_NOT_FOUND")
    mismatch = flags.get_string_details("banner", "x")
    assert (mismatch.value, mismatch.error_code) == ("x", "TYPE_MISMATCH")
    raised = flags.get_integer_details("broken", 5)  # 1 / 0 inside the targeting
    assert (raised.value, raised.reason, raised.error_code) == (5, "ERROR", "GENERAL")
    assert "ZeroDivisionError" in (raised.error_message or "")


class PushedSource:
    """A FlagSource as LiveConfig is one: a built-in default first, then pushed versions."""

    def __init__(self) -> None:
        self.current: Snapshot[Any] = Snapshot(
            "flags", 0, EMPTY_FLAG_SET, EMPTY_FLAG_SET, "default"
        )
        self.callbacks: list[Callable[[Snapshot[Any]], None]] = []

    def subscribe(self, callback: Callable[[Snapshot[Any]], None]) -> None:
        self.callbacks.append(callback)

    def push(self, flag_set: Mapping[str, Any]) -> None:
        value = parse_flag_set(flag_set)
        self.current = Snapshot("flags", self.current.version + 1, flag_set, value, "live")
        for callback in self.callbacks:
            callback(self.current)


Event = tuple[ProviderEvent, ProviderEventDetails]


def recorded(provider: MeshFlagProvider) -> list[Event]:
    """The events ``provider`` emits, as the SDK receives them (``attach``, synchronously); the
    SDK's own client handlers would run on its thread pool, whose threads outlive the tests."""
    events: list[Event] = []
    provider.attach(lambda _provider, event, details: events.append((event, details)))
    return events


def test_not_ready_until_a_flag_set_then_ready_and_changes_name_their_flags() -> None:
    source = PushedSource()
    client = client_of(MeshFlagProvider(source))
    watched = MeshFlagProvider(source)
    events = recorded(watched)
    try:
        assert client.get_provider_status() == ProviderStatus.ERROR
        waiting = client.get_boolean_details("banner", True)
        assert (waiting.value, waiting.error_code) == (True, "PROVIDER_NOT_READY")

        source.push(FLAG_SET)
        assert client.get_provider_status() == ProviderStatus.READY
        assert client.get_boolean_value("banner", True) is False
        assert [(e, d.flags_changed) for e, d in events] == [
            (ProviderEvent.PROVIDER_READY, None),
            (ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, sorted(FLAG_SET["flags"])),
        ]

        changed = json.loads(json.dumps(FLAG_SET))
        changed["flags"]["banner"]["defaultVariant"] = "on"
        changed["flags"]["new"] = {"state": "ENABLED", "variants": ON_OFF, "defaultVariant": "on"}
        del changed["flags"]["broken"]
        events.clear()
        source.push(changed)
        assert [(e, d.flags_changed) for e, d in events] == [
            (ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, ["banner", "broken", "new"])
        ]
        assert client.get_boolean_value("banner", False) is True

        # The flag set's metadata is every flag's: all of them changed.
        changed["metadata"]["version"] = "9"
        events.clear()
        source.push(changed)
        assert [(e, d.flags_changed) for e, d in events] == [
            (ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, sorted(changed["flags"]))
        ]
        assert client.get_boolean_details("banner", False).flag_metadata["version"] == "9"
        # The same document again (a reconnect's snapshot): nothing changed, nothing said.
        events.clear()
        source.push(changed)
        assert events == []
    finally:
        api.clear_providers()


def test_a_last_known_good_flag_set_makes_the_provider_ready(tmp_path: Path) -> None:
    """A service whose control service is down at start evaluates its last known good."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "flags.json").write_text(
        json.dumps({"namespace": "flags", "version": 4, "document": FLAG_SET})
    )
    live = LiveConfig(
        "flags",
        parse=parse_flag_set,
        default=EMPTY_FLAG_SET,
        target=f"127.0.0.1:{free_port()}",  # nothing listens
        cache_dir=cache,
        client="test@host:1",
    )
    try:
        assert live.start(wait_s=0.2).source == "last-known-good"
        provider = MeshFlagProvider(live)
        client = client_of(provider)
        assert client.get_provider_status() == ProviderStatus.READY
        assert provider.version == 4
        hit = client.get_boolean_details("beta", False, ctx("u", email="a@example.com"))
        assert (hit.value, hit.reason) == (True, "TARGETING_MATCH")
    finally:
        live.close()
        api.clear_providers()


def test_evaluations_during_changes_see_one_flag_set_or_the_next() -> None:
    source = static_source(FLAG_SET)
    client = client_of(MeshFlagProvider(source))
    flipped = json.loads(json.dumps(FLAG_SET))
    flipped["flags"]["banner"]["defaultVariant"] = "on"
    seen: set[Any] = set()
    stop = threading.Event()

    def evaluate() -> None:
        while not stop.is_set():
            details = client.get_boolean_details("banner", None)  # type: ignore[arg-type]
            seen.add((details.value, details.error_code))

    readers = [threading.Thread(target=evaluate) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        for n in range(40):
            source.update(flipped if n % 2 == 0 else FLAG_SET)
    finally:
        stop.set()
        for reader in readers:
            reader.join()
        api.clear_providers()
    assert seen <= {(True, None), (False, None)} and seen


USERS = [f"user-{n}" for n in range(10_000)]
BUCKET = """
import json, sys
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from meshkit.control import MeshFlagProvider, static_source
flag_set, users = json.loads(sys.stdin.read())
api.set_provider_and_wait(MeshFlagProvider(static_source(flag_set)))
client = api.get_client()
context = [EvaluationContext(u, {"country": "DE"}) for u in users]
print(json.dumps([client.get_boolean_value("express", False, c) for c in context]))
"""


def test_bucketing_is_the_same_in_another_process_and_splits_as_weighted(
    flags: OpenFeatureClient,
) -> None:
    here = [flags.get_boolean_value("express", False, ctx(u, country="DE")) for u in USERS]
    # 20 % of 10 000: the binomial's standard deviation is 40 users; 4 of them either side.
    assert 1840 <= sum(here) <= 2160, sum(here)
    there = subprocess.run(
        [sys.executable, "-c", BUCKET],
        input=json.dumps([FLAG_SET, USERS[:500]]),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(there.stdout) == here[:500]
    # Another flag's split is independent of this one (the flag key is in the bucketing value).
    renamed = json.loads(json.dumps(FLAG_SET))
    renamed["flags"]["express2"] = renamed["flags"]["express"]
    other = client_of(MeshFlagProvider(static_source(renamed)))
    both = sum(
        a and other.get_boolean_value("express2", False, ctx(u, country="DE"))
        for u, a in zip(USERS, here, strict=True)
    )
    assert 320 <= both <= 480, both  # 4 % of users, if independent (sd about 20)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda f: f.pop("flags"), "flags: required"),
        (lambda f: f["flags"]["banner"].update(state="ON"), "flags.banner.state"),
        (lambda f: f["flags"]["banner"].update(variants={}), "flags.banner.variants"),
        (lambda f: f["flags"]["banner"]["variants"].update(on="yes"), "flags.banner.variants"),
        (lambda f: f["flags"]["beta"].update(defaultVariant="maybe"), "flags.beta.defaultVariant"),
        (lambda f: f["flags"]["beta"].update(metadata={"x": [1]}), "flags.beta.metadata.x"),
        (lambda f: f["metadata"].update(owner={"a": 1}), "metadata.owner"),
        (
            lambda f: f["flags"]["beta"].update(targeting={"startswith": [{"var": "e"}, "a"]}),
            "flags.beta.targeting: unknown operation 'startswith'",
        ),
        (
            lambda f: f["flags"]["beta"].update(targeting={"if": [{"$ref": "nope"}, "on"]}),
            "flags.beta.targeting: $ref 'nope'",
        ),
    ],
)
def test_parse_flag_set_names_the_flag_and_field(
    change: Callable[[dict[str, Any]], Any], field: str
) -> None:
    flag_set = json.loads(json.dumps(FLAG_SET))
    change(flag_set)
    with pytest.raises(ConfigRejected) as refused:
        parse_flag_set(flag_set)
    assert field in str(refused.value)


def test_parse_flag_set_keeps_a_good_set_and_resolves_evaluator_refs() -> None:
    flag_set = json.loads(json.dumps(FLAG_SET))
    flag_set["$evaluators"] = {"staff": {"ends_with": [{"var": "email"}, "@example.com"]}}
    flag_set["flags"]["beta"]["targeting"] = {"if": [{"$ref": "staff"}, "on", "off"]}
    parsed = parse_flag_set(flag_set)
    assert parsed == flag_set and parsed is not flag_set
    client = client_of(MeshFlagProvider(static_source(parsed)))
    try:
        assert client.get_boolean_value("beta", False, ctx("u", email="a@example.com")) is True
    finally:
        api.clear_providers()


def toy_service(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, build: Callable[[ServiceContext[Any]], None]
) -> Service[ServiceSettings]:
    """A kit service "toy" in a mesh without a control service (its flags: the last known good
    in its config cache, if any)."""
    mesh = tmp_path / "mesh.toml"
    mesh.write_text('[[component]]\nname = "toy"\ncommand = ["x"]\nport = 1\nhealth = "grpc"\n')
    monkeypatch.setenv("MESH_CONFIG", str(mesh))
    monkeypatch.delenv("MESH_ADDRESS_CONTROL", raising=False)

    def bindings(ctx: ServiceContext[ServiceSettings]) -> list[ServiceBinding]:
        build(ctx)
        return []

    return Service("toy", bindings, description="A toy.", database=False)


def test_ctx_flags_is_the_process_provider_over_the_flags_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "toy.config"
    cache.mkdir()
    (cache / "flags.json").write_text(
        json.dumps({"namespace": "flags", "version": 3, "document": FLAG_SET})
    )
    seen: list[Any] = []

    def build(ctx: ServiceContext[Any]) -> None:
        client = ctx.flags
        seen.append(client.get_boolean_details("beta", False, ctx_of("u", "a@example.com")))
        seen.append(ctx.flags.provider)  # the same provider on every use
        seen.append(api.get_client().provider)  # and the process's, for code outside the kit
        seen.append(client.domain)

    service = toy_service(tmp_path, monkeypatch, build)
    settings = service.load_settings({"TOY_PORT": "0", "TOY_DB_PATH": str(tmp_path / "toy.db")})
    try:
        service.create(settings).stop(0)
        details, provider, global_provider, domain = seen
        assert (details.value, details.reason) == (True, "TARGETING_MATCH")
        assert isinstance(provider, MeshFlagProvider) and provider.version == 3
        assert global_provider is provider and domain == "toy"

        # Stopped: the next service makes its own; with no flag set at all it answers defaults.
        (cache / "flags.json").unlink()
        seen.clear()
        with caplog.at_level(logging.WARNING, logger="meshkit.service"):
            service.create(settings).stop(0)
        details, provider, _, _ = seen
        assert provider is not global_provider
        assert (details.value, details.error_code) == (False, "PROVIDER_NOT_READY")
        assert any("flags: no flag set yet" in r.getMessage() for r in caplog.records)
    finally:
        api.clear_providers()


def ctx_of(key: str, email: str) -> EvaluationContext:
    return EvaluationContext(key, {"email": email})
