"""The flag checkout.express-shipping, as shipping reads it: the shop's own flag set (the file
`mesh up` loads) through meshkit's OpenFeature provider, by customer and destination country; each
decision shows on the CreateShipment span as OpenTelemetry's ``feature_flag.evaluation`` event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from meshkit.address import Address
from meshkit.control.flags import MeshFlagProvider, static_source
from shipping.adapters.flags import EXPRESS_FLAG, FlagServiceLevels
from shipping.domain.model import ServiceLevel

REPO = Path(__file__).resolve().parents[3]
FLAG_SET: dict[str, Any] = json.loads(
    (REPO / "proto" / "shop" / "config" / "flags.json").read_text()
)
BERLIN = Address("Ada Lovelace", "Unter den Linden 1", "Berlin", "10117", "DE")
EVALUATION_EVENT = "feature_flag.evaluation"
BOSTON = Address("Ada Lovelace", "1 Main St", "Boston", "02108", "US")


@pytest.fixture
def client() -> Iterator[OpenFeatureClient]:
    """An OpenFeature client over the shop's flag set, in a domain of its own (the process's
    default provider is left alone)."""
    domain = "shipping-express-test"
    api.set_provider(MeshFlagProvider(static_source(FLAG_SET)), domain)
    yield api.get_client(domain)
    api.clear_providers()


def test_express_goes_to_a_fifth_of_the_customers_shipping_to_de_at_or_nl(
    client: OpenFeatureClient,
) -> None:
    levels = FlagServiceLevels(client)
    customers = [f"cust-{n}" for n in range(1000)]
    express = [
        c
        for c in customers
        if levels.level_for(order_id="o-1", customer_id=c, address=BERLIN) is ServiceLevel.EXPRESS
    ]
    assert 150 <= len(express) <= 250  # 20 % of 1000: 4 standard deviations either side
    # The provider's own answer, customer by customer (flagd's fractional over flag key + id).
    on = [
        c
        for c in customers
        if client.get_boolean_value(EXPRESS_FLAG, False, EvaluationContext(c, {"country": "DE"}))
    ]
    assert express == on
    # Outside the targeted countries nobody gets it; one customer gets one answer everywhere.
    assert all(
        levels.level_for(order_id="o-2", customer_id=c, address=BOSTON) is ServiceLevel.STANDARD
        for c in express
    )
    assert all(
        levels.level_for(order_id=f"o-{n}", customer_id=express[0], address=BERLIN)
        is ServiceLevel.EXPRESS
        for n in range(5)
    )


def test_without_a_customer_the_order_id_is_the_unit(client: OpenFeatureClient) -> None:
    levels = FlagServiceLevels(client)
    orders = [f"order-{n}" for n in range(300)]
    chosen = [
        o
        for o in orders
        if levels.level_for(order_id=o, customer_id="", address=BERLIN) is ServiceLevel.EXPRESS
    ]
    expected = [
        o
        for o in orders
        if client.get_boolean_value(EXPRESS_FLAG, False, EvaluationContext(o, {"country": "DE"}))
    ]
    assert chosen == expected and 0 < len(chosen) < len(orders)


def test_each_evaluation_is_a_feature_flag_event_on_the_current_span(
    client: OpenFeatureClient,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    levels = FlagServiceLevels(client)
    with tracer.start_as_current_span("CreateShipment"):
        levels.level_for(order_id="o-1", customer_id="cust-7", address=BERLIN)
        levels.level_for(order_id="o-2", customer_id="cust-7", address=BOSTON)
    [span] = exporter.get_finished_spans()
    events = [e for e in span.events if e.name == EVALUATION_EVENT]
    assert len(events) == 2
    berlin, boston = (dict(e.attributes or {}) for e in events)
    on = client.get_boolean_details(
        EXPRESS_FLAG, False, EvaluationContext("cust-7", {"country": "DE"})
    )
    assert berlin == {
        "feature_flag.key": EXPRESS_FLAG,
        "feature_flag.provider.name": "meshkit",
        "feature_flag.result.reason": "split",
        "feature_flag.result.variant": on.variant,
        "feature_flag.set.id": "shop",
        "feature_flag.version": "1",
    }
    assert boston["feature_flag.result.reason"] == "targeting_match"
    assert boston["feature_flag.result.variant"] == "off"


def test_a_flag_set_without_the_flag_ships_standard_and_says_why(
    client: OpenFeatureClient,
) -> None:
    api.set_provider(MeshFlagProvider(static_source({"flags": {}})), "shipping-no-flag")
    levels = FlagServiceLevels(api.get_client("shipping-no-flag"))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span("CreateShipment"):
        level = levels.level_for(order_id="o-1", customer_id="cust-7", address=BERLIN)
    assert level is ServiceLevel.STANDARD
    [event] = exporter.get_finished_spans()[0].events
    assert event.attributes is not None
    assert event.attributes["feature_flag.result.reason"] == "error"
    assert str(event.attributes["error.type"]).lower() == "flag_not_found"
