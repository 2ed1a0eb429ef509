"""meshkit.otlp: the OTLP/gRPC span exporter, with a span encoder five times cheaper than the SDK's.

Why: the SDK's ``encode_spans`` builds a protobuf object per span, attribute and value (about
30 µs of Python per span, measured), and it runs in the BatchSpanProcessor's thread, which
holds the GIL the service's own threads need: with the stock exporter, tracing cost a meshkit
service ~35% of its throughput at 16 concurrent calls, half of it in the encoder.

``encode_request(spans)`` writes the protobuf wire format of an ``ExportTraceServiceRequest``
directly: the bytes are exactly what ``encode_spans(spans).SerializeToString()`` gives (a test
holds it to that on spans of every shape), so every OTLP receiver reads them unchanged. What
repeats from span to span is encoded once and reused: the resource and instrumentation scope of
a batch, each ``key=value`` attribute pair (an RPC span's ``rpc.method``, ``server.port``, ...)
and, for the common span shape (no trace state, events, links or drops), the name, kind and
whole attribute list of a span like the last ones, from bounded caches: an RPC span of a method
seen before costs ids, times, status and flags (~2.7 µs against 6.9 µs, measured).

``SpanExporter`` is the SDK's ``OTLPSpanExporter`` (endpoint, headers, TLS, compression, timeout,
retries and reconnects, all from the standard ``OTEL_EXPORTER_OTLP_*`` variables) with only the
encoding swapped: its stub sends the pre-encoded bytes as they are. It overrides two hooks of
the pinned exporter (``_initialize_channel_and_stub``, ``_translate_data``); the tests that send
through it to a real receiver fail if a new release moves them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import grpc
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, Status, StatusCode

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

# Span.flags (trace.proto SpanFlags): the exporter always says whether the parent was remote.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
# Wire tags (field number << 3 | wire type): 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
_SPAN_TRACE_ID = b"\x0a\x10"  # field 1, 16 bytes
_SPAN_SPAN_ID = b"\x12\x08"  # field 2, 8 bytes
_SPAN_PARENT_ID = b"\x22\x08"  # field 4, 8 bytes
_SPAN_START = b"\x39"  # field 7, fixed64
_SPAN_END = b"\x41"  # field 8, fixed64
_SPAN_FLAGS = b"\x85\x01"  # field 16, fixed32
_LINK_TRACE_ID = b"\x0a\x10"
_LINK_SPAN_ID = b"\x12\x08"
_LINK_FLAGS = b"\x35"  # field 6, fixed32
_EVENT_TIME = b"\x09"  # field 1, fixed64
_FLAGS_LOCAL = struct.pack("<I", _HAS_IS_REMOTE)
_FLAGS_REMOTE = struct.pack("<I", _HAS_IS_REMOTE | _IS_REMOTE)
_EMPTY_STATUS = b"\x7a\x00"  # field 15, an empty Status (the SDK always sets one)
_KINDS = {0: b"\x30\x01", 1: b"\x30\x02", 2: b"\x30\x03", 3: b"\x30\x04", 4: b"\x30\x05"}
"""SpanKind.value (INTERNAL 0 .. CONSUMER 4) -> Span.kind field (SPAN_KIND_INTERNAL 1 ..)."""

_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack

_KV_CACHE_LIMIT = 4096
# (field tag, key, value type, value) -> the KeyValue field's bytes.
_kv_cache: dict[tuple[bytes, str, type, Any], bytes] = {}


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 and enums: ten bytes of two's complement
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return tag + _varint(len(payload)) + payload


def _string(tag: bytes, text: str | None) -> bytes:
    """A proto3 string field; absent when empty."""
    return _field(tag, text.encode()) if text else b""


def _uint(tag: bytes, value: int | None) -> bytes:
    """A proto3 uint32 field; absent when zero."""
    return tag + _varint(value) if value else b""


def _any_value(value: Any) -> bytes:
    """An AnyValue message's bytes (its oneof member is written even when it is the default)."""
    if value is None:
        return b""
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, int):
        return b"\x18" + _varint(value)
    if isinstance(value, float):
        return b"\x21" + _pack_d(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(v)) for v in value))
    if isinstance(value, Mapping):
        return _field(
            b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items())
        )
    raise TypeError(f"invalid attribute value type {type(value).__name__}")


def _key_value(key: str, value: Any) -> bytes:
    """A KeyValue message's bytes."""
    return _string(b"\x0a", key) + _field(b"\x12", _any_value(value))


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> bytes:
    """Every ``key=value`` of ``attributes`` as repeated KeyValue fields under ``tag``."""
    if not attributes:
        return b""
    parts = []
    cache = _kv_cache
    for key, value in attributes.items():
        kind = type(value)
        if kind is str or kind is int or kind is bool or kind is float:
            cache_key = (tag, key, kind, value)
            encoded = cache.get(cache_key)
            if encoded is None:
                encoded = _field(tag, _key_value(key, value))
                if len(cache) >= _KV_CACHE_LIMIT:
                    cache.clear()  # ids and other one-off values: start over rather than grow
                cache[cache_key] = encoded
            parts.append(encoded)
        else:
            parts.append(_field(tag, _key_value(key, value)))
    return b"".join(parts)


def _flags(parent: SpanContext | None) -> bytes:
    return _FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL


_SHAPE_CACHE_LIMIT = 1024
# (name, kind) -> name + kind bytes.
_name_cache: dict[tuple[str, int], bytes] = {}
# attribute items -> attributes bytes, for attribute sets that repeat: what an RPC span of one
# method sends from call to call (only rpc.status_code differs). A set with a one-off value (a
# message id, an offset) is encoded pair by pair and not kept here.
_shape_cache: dict[tuple[tuple[str, Any], ...], bytes] = {}
_STATUS_UNSET = Status(StatusCode.UNSET)


def _span_fast(span: ReadableSpan) -> bytes | None:
    """``_span(span)`` for the common shapes (no trace state or events, links without
    attributes, nothing dropped, attribute values that hash), from cached pieces; None for any
    other span."""
    context = span._context
    if context is None or context.trace_state or span._events:
        return None
    attributes_bytes = _attributes_fast(span._attributes)
    if attributes_bytes is None:
        return None
    links_bytes = _links_fast(span._links)
    if links_bytes is None:
        return None
    name = span._name
    kind = span._kind.value
    name_key = (name, kind)
    name_bytes = _name_cache.get(name_key)
    if name_bytes is None:
        name_bytes = _string(b"\x2a", name) + _KINDS[kind]
        if len(_name_cache) >= _SHAPE_CACHE_LIMIT:
            _name_cache.clear()
        _name_cache[name_key] = name_bytes
    status = span._status
    if status is _STATUS_UNSET or (status.status_code.value == 0 and not status.description):
        status_bytes = _EMPTY_STATUS
    else:
        status_bytes = _status(status)
    parent = span._parent
    start = span._start_time
    end = span._end_time
    body = b"".join(
        (
            _SPAN_TRACE_ID,
            context.trace_id.to_bytes(16, "big"),
            _SPAN_SPAN_ID,
            context.span_id.to_bytes(8, "big"),
            _SPAN_PARENT_ID + parent.span_id.to_bytes(8, "big") if parent is not None else b"",
            name_bytes,
            _SPAN_START + _pack_q(start) if start else b"",
            _SPAN_END + _pack_q(end) if end else b"",
            attributes_bytes,
            links_bytes,
            status_bytes,
            _SPAN_FLAGS,
            _FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL,
        )
    )
    return b"\x12" + _varint(len(body)) + body


def _attributes_fast(attributes: Any) -> bytes | None:
    """A span's attributes field, from the caches; None when an attribute was dropped or a
    value does not hash (a list: the general path)."""
    if type(attributes) is BoundedAttributes:
        if attributes.dropped:
            return None
        items: Any = attributes._dict.items()
    else:
        items = attributes.items() if attributes else ()
    try:
        key = tuple(items)
        encoded = _shape_cache.get(key)
    except TypeError:
        return None
    if encoded is None:
        encoded, repeated = _attributes_seen(key)
        if repeated:
            if len(_shape_cache) >= _SHAPE_CACHE_LIMIT:
                _shape_cache.clear()
            _shape_cache[key] = encoded
    return encoded


def _attributes_seen(items: tuple[tuple[str, Any], ...]) -> tuple[bytes, bool]:
    """``_attributes`` of ``items`` (every value hashable), and whether every pair was in the
    pair cache already (the set is likely to come again)."""
    parts = []
    cache = _kv_cache
    repeated = True
    for key, value in items:
        kind = type(value)
        cache_key = (b"\x4a", key, kind, value)
        encoded = cache.get(cache_key)
        if encoded is None:
            repeated = False
            encoded = _field(b"\x4a", _key_value(key, value))
            if kind is str or kind is int or kind is bool or kind is float:
                if len(cache) >= _KV_CACHE_LIMIT:
                    cache.clear()
                cache[cache_key] = encoded
        parts.append(encoded)
    return b"".join(parts), repeated


def _links_fast(links: Any) -> bytes | None:
    """The Span.links fields of ``links`` when none has attributes and none was dropped (a
    consumer's link to its producer); None otherwise."""
    if getattr(links, "dropped", 0):
        return None
    parts = []
    for link in links:
        attributes = link.attributes
        if attributes or getattr(attributes, "dropped", 0):
            return None
        linked = link.context
        body = (
            _LINK_TRACE_ID
            + linked.trace_id.to_bytes(16, "big")
            + _LINK_SPAN_ID
            + linked.span_id.to_bytes(8, "big")
            + _LINK_FLAGS
            + _flags(linked)
        )
        parts.append(b"\x6a" + _varint(len(body)) + body)
    return b"".join(parts)


def _status(status: Status) -> bytes:
    """A span's ``status`` field (always present: the SDK writes an empty Status for UNSET)."""
    code = status.status_code.value
    if not code and not status.description:
        return _EMPTY_STATUS
    return _field(
        b"\x7a",
        _string(b"\x12", status.description) + (b"\x18" + _varint(code) if code else b""),
    )


def _span(span: ReadableSpan) -> bytes:
    """A Span message's bytes, as the SDK's ``_encode_span`` builds it."""
    context = span.get_span_context()
    assert context is not None
    parent = span.parent
    parts = [
        _SPAN_TRACE_ID,
        context.trace_id.to_bytes(16, "big"),
        _SPAN_SPAN_ID,
        context.span_id.to_bytes(8, "big"),
    ]
    if context.trace_state:
        parts.append(_string(b"\x1a", ",".join(f"{k}={v}" for k, v in context.trace_state.items())))
    if parent is not None:
        parts += (_SPAN_PARENT_ID, parent.span_id.to_bytes(8, "big"))
    parts.append(_string(b"\x2a", span.name))
    parts.append(_KINDS[span.kind.value])
    if span.start_time:
        parts += (_SPAN_START, _pack_q(span.start_time))
    if span.end_time:
        parts += (_SPAN_END, _pack_q(span.end_time))
    parts.append(_attributes(b"\x4a", span.attributes))
    parts.append(_uint(b"\x50", span.dropped_attributes))
    for event in span.events:
        body = (
            (_EVENT_TIME + _pack_q(event.timestamp) if event.timestamp else b"")
            + _string(b"\x12", event.name)
            + _attributes(b"\x1a", event.attributes)
            + _uint(b"\x20", event.dropped_attributes)
        )
        parts.append(_field(b"\x5a", body))
    parts.append(_uint(b"\x60", span.dropped_events))
    for link in span.links:
        body = (
            _LINK_TRACE_ID
            + link.context.trace_id.to_bytes(16, "big")
            + _LINK_SPAN_ID
            + link.context.span_id.to_bytes(8, "big")
            + _attributes(b"\x22", link.attributes)
            + _uint(b"\x28", link.dropped_attributes)
            + _LINK_FLAGS
            + _flags(link.context)
        )
        parts.append(_field(b"\x6a", body))
    parts.append(_uint(b"\x70", span.dropped_links))
    parts.append(_status(span.status))
    parts += (_SPAN_FLAGS, _flags(parent))
    return _field(b"\x12", b"".join(parts))  # ScopeSpans.spans (field 2)


def _scope(scope: InstrumentationScope | None) -> bytes:
    """A ScopeSpans' ``scope`` field (always present: the SDK writes an empty one for None)."""
    if scope is None:
        return b"\x0a\x00"
    body = (
        _string(b"\x0a", scope.name)
        + _string(b"\x12", scope.version)
        + _attributes(b"\x1a", scope.attributes)
    )
    return _field(b"\x0a", body)


def _resource(resource: Resource) -> bytes:
    """A ResourceSpans' ``resource`` field."""
    return _field(b"\x0a", _attributes(b"\x0a", resource.attributes))


def encode_request(spans: Sequence[ReadableSpan]) -> bytes:
    """The serialized ``ExportTraceServiceRequest`` of ``spans``, grouped by resource, then by
    instrumentation scope, in first-seen order (as the SDK groups them).

    Groups are keyed by object identity: one TracerProvider's spans share one Resource object
    and one scope object per tracer, and ``Resource.__hash__`` (what the SDK keys on) writes the
    resource out as JSON on every call, a third of the SDK encoder's cost.
    """
    grouped: dict[int, tuple[Resource, dict[int, tuple[InstrumentationScope | None, list[bytes]]]]]
    grouped = {}
    for span in spans:
        resource = span.resource
        entry = grouped.get(id(resource))
        if entry is None:
            entry = grouped[id(resource)] = (resource, {})
        scope = span.instrumentation_scope or None
        scopes = entry[1]
        group = scopes.get(id(scope))
        if group is None:
            group = scopes[id(scope)] = (scope, [])
        group[1].append(_span_fast(span) or _span(span))
    out = []
    for resource, scopes in grouped.values():
        scope_spans = b"".join(
            _field(
                b"\x12",
                _scope(scope)
                + b"".join(encoded)
                + _string(b"\x1a", scope.schema_url if scope else None),
            )
            for scope, encoded in scopes.values()
        )
        body = _resource(resource) + scope_spans + _string(b"\x1a", resource.schema_url)
        out.append(_field(b"\x0a", body))
    return b"".join(out)


class _BytesTraceServiceStub:
    """TraceService's Export over ``channel``, sending the request bytes as they are."""

    def __init__(self, channel: grpc.Channel) -> None:
        self.Export: grpc.UnaryUnaryMultiCallable[bytes, ExportTraceServiceResponse]
        self.Export = channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


class SpanExporter(OTLPSpanExporter):
    """``OTLPSpanExporter`` (same arguments, same ``OTEL_EXPORTER_OTLP_*`` variables) that
    encodes with ``encode_request``."""

    def _initialize_channel_and_stub(self) -> None:
        super()._initialize_channel_and_stub()  # type: ignore[no-untyped-call]
        channel: grpc.Channel = self._channel  # type: ignore[assignment] # set by the call above
        self._client = _BytesTraceServiceStub(channel)  # type: ignore[assignment]

    def _translate_data(self, data: Sequence[ReadableSpan]) -> Any:
        return encode_request(data)
