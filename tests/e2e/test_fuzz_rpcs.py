"""End to end: a bounded, seeded fuzz of every RPC the mesh serves (issue 20, "Done when").

The whole mesh runs under `mesh up -d` on the real Kafka, on free ports (a mesh.toml of its own,
``support.mesh.write_moved_mesh_toml``), so it neither needs nor disturbs the default ports.
Every service and method is found through server reflection (the descriptors the services
serve, not the generated code), and each method gets a bounded, seeded set of requests:

- random valid-shaped messages built from the descriptors (values hinted by field name, ids
  taken from earlier answers, so calls reach past validation);
- hand-made bad values, one field at a time on a valid-shaped request: empty, blank and huge
  strings, NUL, long multi-byte text, negative and extreme numbers, unknown enum numbers,
  absent and empty messages, out-of-range Timestamps (through their own fields), thousands of
  repeated elements;
- malformed bodies as raw bytes: bad UTF-8 in each string field, truncated messages, invalid
  and mismatched wire types, lengths past the end, nesting too deep, overlong varints.

Every call carries the token of the least privileged caller the service's policy lets make it
(``CALLERS``, by the permission the contract declares; minted by the mesh's identity): the fuzz
customer's own for orders and its reads, support's for searches and staff reads, an admin's for
stock, sagas and rebuilds, orders' own service token acting for the customer for what only the
saga does (reserve, pay, ship). So the requests reach the handlers, as a real caller's do.

Every answer must fit: OK, or a status a caller can act on (INVALID_ARGUMENT, NOT_FOUND,
ALREADY_EXISTS, FAILED_PRECONDITION, OUT_OF_RANGE, ABORTED, and PERMISSION_DENIED naming the
permission: a request for a resource the customer does not own, e.g. a random order id, or an
order placed in another customer's name). Never INTERNAL or UNKNOWN, never UNAUTHENTICATED (the
token is good), never RESOURCE_EXHAUSTED (a status too large for the caller's metadata limit),
never a deadline overrun. INVALID_ARGUMENT carries a BadRequest detail whose violations name
fields of the request, except for a body that does not decode, whose message says so. Without a
token, every private method answers UNAUTHENTICATED. And no service logs an RPC as a crash
(grpcio's or meshkit's traceback): a bad request costs one access line. The totals by status
code are printed (``pytest -s``).
"""

from __future__ import annotations

import collections
import json
import math
import os
import random
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor, descriptor_pool, message, message_factory
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from grpc_status import rpc_status
from support.mesh import REPO, MeshTokens, Metadata, mesh_cli, mesh_tokens, write_moved_mesh_toml

from mesh.projections.v1 import projections_pb2
from mesh.sagas.v1 import sagas_pb2
from meshkit import authz
from shop.inventory.v1 import inventory_pb2
from shop.order_views.v1 import order_views_pb2
from shop.orders.v1 import orders_pb2
from shop.payments.v1 import payments_pb2
from shop.shipping.v1 import shipping_pb2

# Imported for their descriptors: authz.rule_of reads each RPC's declared permission from them.
CONTRACTS = (
    inventory_pb2,
    payments_pb2,
    shipping_pb2,
    orders_pb2,
    order_views_pb2,
    sagas_pb2,
    projections_pb2,
)

SEED = 20
RANDOM_PER_METHOD = 60
CALL_TIMEOUT_S = 8.0
MAX_CALLS = 4000
# Discovered in this order, so the ids a service hands out are known before the calls that use
# them (stock before orders, orders before their views).
SERVICES = ("inventory", "payments", "shipping", "orders", "order_views")
# Reflection is the tool the fuzz discovers with (a bidirectional stream of its own).
SKIPPED = frozenset(
    {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
FITTING = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)
CUSTOMER = "fuzz-customer"
# The least privileged caller each permission's policy admits (services/*/policy.cedar):
# ("customer" | "support" | "admin", subject) for a user, ("service", client id) for a service
# acting on behalf of the fuzz customer.
CALLERS: dict[str, tuple[str, str]] = {
    "orders.place": ("customer", CUSTOMER),
    "orders.read": ("customer", CUSTOMER),
    "orders.search": ("support", ""),
    "projections.inspect": ("support", ""),
    "payments.read": ("support", ""),
    "shipping.read": ("support", ""),
    "inventory.stock.set": ("admin", ""),
    "sagas.inspect": ("admin", ""),
    "projections.rebuild": ("admin", ""),
    **{
        permission: ("service", "orders")
        for permission in (
            "inventory.reserve",
            "inventory.release",
            "inventory.commit",
            "payments.authorize",
            "payments.capture",
            "payments.void",
            "payments.refund",
            "shipping.create",
            "shipping.cancel",
        )
    },
}
# grpcio-health-checking's servicer does not implement List (added to health.proto in 2024): the
# descriptor reflection serves has it, the server answers it UNIMPLEMENTED, as it should.
UNIMPLEMENTED = frozenset({"grpc.health.v1.Health.List"})
UNDECODABLE = "the request body could not be decoded"
# Who logs an RPC that crashed (with a traceback): grpcio itself, and meshkit's edge.
EDGE_LOGGERS = frozenset({"grpc._server", "grpc._common", "meshkit.server"})

F = descriptor.FieldDescriptor
STRINGS = (F.TYPE_STRING,)
SIGNED32 = (F.TYPE_INT32, F.TYPE_SINT32, F.TYPE_SFIXED32)
SIGNED64 = (F.TYPE_INT64, F.TYPE_SINT64, F.TYPE_SFIXED64)
UNSIGNED32 = (F.TYPE_UINT32, F.TYPE_FIXED32)
UNSIGNED64 = (F.TYPE_UINT64, F.TYPE_FIXED64)
FLOATS = (F.TYPE_DOUBLE, F.TYPE_FLOAT)

# Values that pass validation, by field name: random requests built from them reach the use
# cases rather than stopping at the first check.
HINTS: dict[str, tuple[Any, ...]] = {
    "currency_code": ("EUR", "USD", "JPY"),
    "country_code": ("DE", "US", "HK", "AQ"),
    "postal_code": ("10115", "22202", ""),
    "city": ("Berlin", "Arlington"),
    "name": ("Ada Lovelace",),
    "line1": ("Main St 1",),
    "line2": ("", "Flat 2"),
    "payment_token": ("tok_visa", "tok_chargeDeclined", "tok_mastercard"),
    "sku": ("FUZZ-1", "FUZZ-2", "FUZZ-3"),
    "quantity": (1, 2, 3, 50, 2**31 - 1),
    "units": (0, 1, 12, 10**12),
    "nanos": (0, 500_000_000),
    "customer_id": ("fuzz-customer",),
    "query": ("FUZZ", "Ada", "fuzz"),
    "page_size": (0, 1, 10),
    "projection": ("", "order_views", "nope"),
    "limit": (0, 5),
    "service": ("", "shop.orders.v1.OrdersService"),
}
# Most random requests keep to one of these (one currency, one country with its own postal code
# and city): mixed ones would all stop at the same first check.
THEMES: tuple[dict[str, Any], ...] = (
    {"currency_code": "EUR", "country_code": "DE", "postal_code": "10115", "city": "Berlin"},
    {"currency_code": "USD", "country_code": "US", "postal_code": "22202", "city": "Arlington"},
    {"currency_code": "JPY", "nanos": 0, "country_code": "HK", "postal_code": ""},
)
# Ids handed out in answers, by the field name requests use for them.
HARVESTED = {
    "order_id",
    "payment_id",
    "shipment_id",
    "reservation_id",
    "consistency_token",
    "next_page_token",
}
ALIASES = {"next_page_token": "page_token"}

BAD_STRINGS: tuple[tuple[str, str], ...] = (
    ("empty", ""),
    ("blank", "   "),
    ("newline", "\n"),
    ("huge", "x" * 20_000),
    ("nul", "a\x00b"),
    ("129 chars", "y" * 129),
    ("multi-byte", "é" * 3_000),
    ("emoji", "\U0001f4a5" * 1_000),
    ("quotes", "'\"%\\{}"),
)
BAD_SIGNED32 = (0, -1, 2**31 - 1, -(2**31))
BAD_SIGNED64 = (0, -1, 2**63 - 1, -(2**63), 2**31)
BAD_UNSIGNED32 = (0, 2**32 - 1)
BAD_UNSIGNED64 = (0, 2**64 - 1)
BAD_FLOATS = (math.nan, math.inf, -math.inf, -0.0)
MANY = 3_000


@dataclass(frozen=True)
class Target:
    """One RPC of one service: where it is, its descriptor, its request and response classes."""

    address: str
    method: descriptor.MethodDescriptor
    request: type[message.Message]
    response: type[message.Message]

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def rule(self) -> authz.Rule:
        """What the contract declares about who may call it (health and reflection: public)."""
        return authz.rule_of(self.path)


def metadata_for(target: Target, tokens: MeshTokens) -> Metadata:
    """The least privileged caller's metadata for ``target`` (none for a public method)."""
    rule = target.rule
    assert rule.declared, f"{target.path} declares no permission"
    if rule.public:
        return ()
    assert rule.permission in CALLERS, f"{target.path}: who may ask {rule.permission}?"
    role, subject = CALLERS[rule.permission]
    if role == "service":
        return tokens.acting_for(CUSTOMER, subject)
    return tokens.metadata(role, subject)


@dataclass(frozen=True)
class Case:
    """One request: what it tries (for the report) and its bytes on the wire."""

    label: str
    body: bytes


@dataclass
class Tally:
    """Every answer by status code, and the ones that do not fit."""

    codes: collections.Counter[str] = field(default_factory=collections.Counter)
    per_service: dict[str, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    findings: list[tuple[str, str, str, str]] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return sum(self.codes.values())

    def report(self) -> str:
        lines = [
            f"{self.calls} calls: " + ", ".join(f"{c} {n}" for c, n in self.codes.most_common())
        ]
        for service, codes in sorted(self.per_service.items()):
            lines.append(f"  {service}: " + ", ".join(f"{c} {n}" for c, n in codes.most_common()))
        return "\n".join(lines)

    def findings_report(self) -> str:
        grouped: dict[tuple[str, str, str], list[str]] = collections.defaultdict(list)
        for method, label, code, detail in self.findings:
            grouped[(method, code, detail[:100])].append(label)
        return "\n".join(
            f"{len(labels)}x {method} {code}: {detail!r} (e.g. {labels[0]})"
            for (method, code, detail), labels in sorted(grouped.items())
        )


# ---------------------------------------------------------------------------------------------
# discovery
# ---------------------------------------------------------------------------------------------


def discover(addresses: dict[str, str]) -> list[Target]:
    """Every method of every service the mesh's processes serve, through reflection only."""
    targets: list[Target] = []
    seen: set[str] = set()
    for name in SERVICES:
        address = addresses[name]
        with grpc.insecure_channel(address) as channel:
            database = ProtoReflectionDescriptorDatabase(channel)
            pool = descriptor_pool.DescriptorPool(database)
            services = sorted(set(database.get_services()) - SKIPPED - seen)
            seen.update(services)
            for service_name in services:
                service = pool.FindServiceByName(service_name)
                for method in service.methods:
                    assert not method.client_streaming, f"{method.full_name}: not fuzzed yet"
                    targets.append(
                        Target(
                            address,
                            method,
                            message_factory.GetMessageClass(method.input_type),
                            message_factory.GetMessageClass(method.output_type),
                        )
                    )
    return targets


# ---------------------------------------------------------------------------------------------
# requests
# ---------------------------------------------------------------------------------------------


class Requests:
    """Builds the requests of one method from its descriptor (seeded: the same run each time)."""

    def __init__(self, rng: random.Random, pool: dict[str, list[str]]) -> None:
        self.rng = rng
        self.pool = pool
        self.theme: dict[str, Any] = {}

    # random valid-shaped ------------------------------------------------------------------

    def valid(self, cls: type[message.Message]) -> message.Message:
        # One currency and one country per request, mostly: mixed ones are refused at once.
        self.theme = dict(self.rng.choice(THEMES)) if self.rng.random() < 0.9 else {}
        msg = cls()
        self._fill(msg, depth=0)
        return msg

    def _fill(self, msg: message.Message, depth: int) -> None:
        for fd in msg.DESCRIPTOR.fields:
            if self.rng.random() < 0.03:
                continue  # sometimes absent
            if fd.message_type is not None:
                if depth >= 4:
                    continue
                if fd.is_repeated:
                    for _ in range(self.rng.choice((1, 1, 2, 3))):
                        self._fill(getattr(msg, fd.name).add(), depth + 1)
                else:
                    sub = getattr(msg, fd.name)
                    sub.SetInParent()
                    self._fill(sub, depth + 1)
                continue
            if fd.is_repeated:
                getattr(msg, fd.name).extend(
                    self._scalar(fd) for _ in range(self.rng.randint(1, 3))
                )
            else:
                setattr(msg, fd.name, self._scalar(fd))

    def _scalar(self, fd: descriptor.FieldDescriptor) -> Any:
        rng = self.rng
        if fd.containing_type.full_name == "google.protobuf.Timestamp":
            return int(time.time()) + rng.randint(-86_400, 3_600) if fd.name == "seconds" else 0
        if fd.name in self.theme:
            return self.theme[fd.name]
        known = self.pool.get(fd.name)
        if known and rng.random() < 0.6:
            return rng.choice(known)
        if fd.name in HINTS:
            return rng.choice(HINTS[fd.name])
        if fd.type == F.TYPE_ENUM:
            return rng.choice([v.number for v in fd.enum_type.values])
        if fd.type == F.TYPE_BOOL:
            return rng.random() < 0.5
        if fd.type in FLOATS:
            return rng.uniform(-10, 10)
        if fd.type in (*SIGNED32, *SIGNED64, *UNSIGNED32, *UNSIGNED64):
            return rng.randint(0, 20)
        if fd.type == F.TYPE_BYTES:
            return rng.randbytes(rng.randint(0, 8))
        if fd.name.endswith(("_id", "_key", "_token")):
            return f"fuzz-{rng.randrange(10**6)}"
        return "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(0, 12)))

    # hand-made bad values -------------------------------------------------------------------

    def hand_made(self, cls: type[message.Message]) -> Iterator[Case]:
        for path in _paths(cls.DESCRIPTOR):
            where = ".".join(fd.name for fd in path)
            last = path[-1]
            for label, change in _bad_changes(last):
                msg = self.valid(cls)
                _apply(msg, path, change)
                yield Case(f"{where}={label}", msg.SerializeToString())

    # malformed bodies -----------------------------------------------------------------------

    def malformed(self, cls: type[message.Message]) -> Iterator[Case]:
        rng = self.rng
        base = self.valid(cls).SerializeToString()
        for path in _paths(cls.DESCRIPTOR):
            if path[-1].type in STRINGS:
                where = ".".join(fd.name for fd in path)
                yield Case(f"{where}=bad UTF-8", base + _nested(path, b"ok\xc3\x28\xff"))
        for cut in sorted({len(base) // 3, len(base) // 2, len(base) - 1} - {0}):
            if 0 < cut < len(base):
                yield Case(f"truncated at {cut}/{len(base)}", base[:cut])
        for fd in cls.DESCRIPTOR.fields:
            wrong = 0 if fd.type in (*STRINGS, F.TYPE_BYTES, F.TYPE_MESSAGE) else 2
            body = _tag(fd.number, wrong) + (b"\x01" if wrong == 0 else b"\x02ab")
            yield Case(f"{fd.name} as wire type {wrong}", base + body)
        yield Case("wire type 6", base + b"\x0e\x00")
        yield Case("wire type 7", b"\x0f\x00")
        yield Case("length past the end", _tag(1, 2) + _varint(1_000) + b"ab")
        yield Case("groups nested 200 deep", _tag(99, 3) * 200 + _tag(99, 4) * 200)
        yield Case("overlong varint", _tag(1, 0) + b"\xff" * 11)
        yield Case("field number 0", b"\x00\x01")
        for n in range(3):
            yield Case(f"random bytes #{n}", rng.randbytes(rng.randint(1, 64)))


def _paths(
    msg: descriptor.Descriptor, prefix: tuple[descriptor.FieldDescriptor, ...] = ()
) -> Iterator[tuple[descriptor.FieldDescriptor, ...]]:
    """Every field path of ``msg``, messages before their fields, at most three deep."""
    for fd in msg.fields:
        path = (*prefix, fd)
        yield path
        if fd.message_type is not None and len(path) < 3:
            yield from _paths(fd.message_type, path)


Change = Callable[[message.Message, descriptor.FieldDescriptor], None]


def _bad_changes(fd: descriptor.FieldDescriptor) -> Iterator[tuple[str, Change]]:
    """(label, change) pairs, each setting ``fd`` of a parent message to something bad."""

    def setting(value: Any) -> Change:
        def change(parent: message.Message, fd: descriptor.FieldDescriptor) -> None:
            if fd.is_repeated:
                container = getattr(parent, fd.name)
                del container[:]
                container.append(value)
            else:
                setattr(parent, fd.name, value)

        return change

    if fd.message_type is not None:
        yield "absent", lambda parent, fd: parent.ClearField(fd.name)
        if fd.is_repeated:
            yield f"{MANY} elements", _many_messages
        else:
            yield (
                "empty",
                lambda parent, fd: (
                    parent.ClearField(fd.name),
                    getattr(parent, fd.name).SetInParent(),
                ),
            )
        return
    values: tuple[tuple[str, Any], ...]
    if fd.type in STRINGS:
        values = BAD_STRINGS
    elif fd.type == F.TYPE_ENUM:
        top = max(v.number for v in fd.enum_type.values)
        values = (("unknown enum", 999), ("negative enum", -1), ("next enum", top + 1))
    elif fd.type in SIGNED32:
        values = tuple((str(v), v) for v in BAD_SIGNED32)
    elif fd.type in SIGNED64:
        values = tuple((str(v), v) for v in BAD_SIGNED64)
    elif fd.type in UNSIGNED32:
        values = tuple((str(v), v) for v in BAD_UNSIGNED32)
    elif fd.type in UNSIGNED64:
        values = tuple((str(v), v) for v in BAD_UNSIGNED64)
    elif fd.type in FLOATS:
        values = tuple((str(v), v) for v in BAD_FLOATS)
    elif fd.type == F.TYPE_BOOL:
        values = (("true", True), ("false", False))
    else:
        values = (("empty bytes", b""), ("big bytes", b"\xff" * 20_000))
    for label, value in values:
        yield label, setting(value)
    if fd.is_repeated:
        yield (
            f"{MANY} elements",
            lambda parent, fd: getattr(parent, fd.name).extend([values[-1][1]] * MANY),
        )


def _many_messages(parent: message.Message, fd: descriptor.FieldDescriptor) -> None:
    container = getattr(parent, fd.name)
    template = container[0] if len(container) else None
    for _ in range(MANY):
        item = container.add()
        if template is not None:
            item.CopyFrom(template)


def _apply(
    msg: message.Message, path: tuple[descriptor.FieldDescriptor, ...], change: Change
) -> None:
    parent = msg
    for fd in path[:-1]:
        if fd.is_repeated:
            container = getattr(parent, fd.name)
            parent = container[0] if len(container) else container.add()
        else:
            parent = getattr(parent, fd.name)
            parent.SetInParent()
    change(parent, path[-1])


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _tag(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _nested(path: tuple[descriptor.FieldDescriptor, ...], payload: bytes) -> bytes:
    """``payload`` as the length-delimited value of the last field of ``path``, inside its
    parents (appended to a body, it merges into the message the path names)."""
    body = payload
    for fd in reversed(path):
        body = _tag(fd.number, 2) + _varint(len(body)) + body
    return body


# ---------------------------------------------------------------------------------------------
# calls and verdicts
# ---------------------------------------------------------------------------------------------


def call(
    channel: grpc.Channel, target: Target, body: bytes, metadata: Metadata = ()
) -> tuple[grpc.StatusCode, Any, Any]:
    """(code, response or None, the RpcError or None). A stream is read to its first message."""
    try:
        if target.method.server_streaming:
            stream = channel.unary_stream(target.path)(
                body, timeout=CALL_TIMEOUT_S, metadata=metadata
            )
            try:
                first = next(stream, None)
            finally:
                stream.cancel()
            return grpc.StatusCode.OK, target.response.FromString(first) if first else None, None
        reply = channel.unary_unary(target.path)(body, timeout=CALL_TIMEOUT_S, metadata=metadata)
        return grpc.StatusCode.OK, target.response.FromString(reply), None
    except grpc.RpcError as error:
        return error.code(), None, error


def verdict(target: Target, case: Case, code: grpc.StatusCode, error: Any) -> str | None:
    """Why the answer does not fit, or None when it does."""
    if code is grpc.StatusCode.UNIMPLEMENTED and target.method.full_name in UNIMPLEMENTED:
        return None
    if code not in FITTING:
        return "status does not fit"
    try:
        target.request.FromString(case.body)
        decodes = True
    except message.DecodeError:
        decodes = False
    if not decodes:
        if code is not grpc.StatusCode.INVALID_ARGUMENT or UNDECODABLE not in (
            error.details() or ""
        ):
            return "an undecodable body must be INVALID_ARGUMENT saying so"
        return None
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return _denial_problem(target, error)
    if code is not grpc.StatusCode.INVALID_ARGUMENT:
        return None
    status = rpc_status.from_call(error)
    fields = []
    for detail in status.details if status else ():
        bad_request = error_details_pb2.BadRequest()
        if detail.Unpack(bad_request):
            fields += [v.field for v in bad_request.field_violations]
    if not fields:
        return "INVALID_ARGUMENT without a BadRequest field violation"
    known = {fd.name for fd in target.request.DESCRIPTOR.fields}
    roots = {f.split(".")[0].split("[")[0] for f in fields}
    if not roots <= known:
        return f"violations name no field of the request: {sorted(roots - known)}"
    return None


def _denial_problem(target: Target, error: Any) -> str | None:
    """A denial must name the permission, in its message and its ErrorInfo (issue 14)."""
    permission = target.rule.permission
    if permission not in (error.details() or ""):
        return f"PERMISSION_DENIED without naming {permission}"
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.metadata.get("permission") == permission:
            return None
    return f"PERMISSION_DENIED without an ErrorInfo naming {permission}"


def harvest(answer: message.Message, pool: dict[str, list[str]]) -> None:
    """Keep the ids an answer hands out, for later requests to use."""
    for fd, value in answer.ListFields():
        if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
            continue  # e.g. a Struct's fields: data, not ids
        if fd.message_type is not None:
            for item in value if fd.is_repeated else (value,):
                harvest(item, pool)
        elif fd.name in HARVESTED and isinstance(value, str) and value:
            known = pool.setdefault(ALIASES.get(fd.name, fd.name), [])
            if value not in known and len(known) < 50:
                known.append(value)


# ---------------------------------------------------------------------------------------------
# the mesh and the test
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_mesh(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[tuple[Path, dict[str, str]]]:
    """The whole mesh under `mesh up -d` on free ports: its root, each service's address."""
    root = tmp_path_factory.mktemp("fuzz-mesh")
    for name in ("proto", "scripts"):
        (root / name).symlink_to(REPO / name)
    ports = write_moved_mesh_toml(root)
    env = {**os.environ, "SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{ports['schema-registry']}"}
    env.pop("MESH_KAFKA_BOOTSTRAP", None)
    try:
        up = mesh_cli(root, "up", "-d", "--kafka", kafka_bootstrap, env=env)
        assert up.returncode == 0, up.stderr
        yield root, {name: f"127.0.0.1:{ports[name]}" for name in SERVICES}
    finally:
        mesh_cli(root, "down", env=env)


def crashes_logged(root: Path) -> list[str]:
    """What the services logged as a crash of an RPC: grpcio's "Exception deserializing" and
    "Exception calling application", meshkit's "unhandled error" (each with a traceback)."""
    found = []
    for name in SERVICES:
        for line in (root / ".mesh" / "logs" / f"{name}.log").read_text().splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("logger") in EDGE_LOGGERS and record.get("level") == "ERROR":
                found.append(f"{name}: {record.get('msg', '')[:120]}")
    return found


def test_every_rpc_answers_bad_input_with_a_status_that_fits(
    fuzz_mesh: tuple[Path, dict[str, str]],
) -> None:
    root, addresses = fuzz_mesh
    targets = discover(addresses)
    methods = {t.method.full_name for t in targets}
    assert {"shop.orders.v1.OrdersService.PlaceOrder", "grpc.health.v1.Health.Check"} <= methods
    # Asked per call: cached, and a service token (10 minutes) is renewed before it expires.
    tokens = mesh_tokens(root)
    rng = random.Random(SEED)
    pool: dict[str, list[str]] = {}
    tally = Tally()
    requests = Requests(rng, pool)
    channels = {address: grpc.insecure_channel(address) for address in addresses.values()}
    started = time.monotonic()
    try:
        for target in targets:
            cases = [
                *(
                    Case("random", requests.valid(target.request).SerializeToString())
                    for _ in range(RANDOM_PER_METHOD)
                ),
                *requests.hand_made(target.request),
                *requests.malformed(target.request),
            ]
            for case in cases:
                code, answer, error = call(
                    channels[target.address], target, case.body, metadata_for(target, tokens)
                )
                service = target.method.containing_service.name
                tally.codes[code.name] += 1
                tally.per_service[service][code.name] += 1
                if answer is not None:
                    harvest(answer, pool)
                why = verdict(target, case, code, error)
                if why is not None:
                    detail = (error.details() or "") if error is not None else ""
                    tally.findings.append(
                        (target.method.full_name, case.label, code.name, f"{why}: {detail}")
                    )
            assert tally.calls <= MAX_CALLS, f"the fuzz is bounded: {tally.calls} calls so far"
    finally:
        for channel in channels.values():
            channel.close()
    elapsed = time.monotonic() - started
    print(f"\nfuzz of {len(targets)} methods in {elapsed:.1f}s\n{tally.report()}")
    assert not tally.findings, (
        f"{len(tally.findings)} answers do not fit:\n{tally.findings_report()}\n{tally.report()}"
    )
    crashes = crashes_logged(root)
    assert not crashes, f"{len(crashes)} RPCs logged as crashes, e.g.:\n" + "\n".join(crashes[:10])


def test_every_private_rpc_without_a_token_is_unauthenticated(
    fuzz_mesh: tuple[Path, dict[str, str]],
) -> None:
    """Issue 14: a call with no token gets UNAUTHENTICATED, which names what is missing."""
    _, addresses = fuzz_mesh
    requests = Requests(random.Random(SEED), {})
    wrong: list[str] = []
    checked = 0
    for target in discover(addresses):
        if target.rule.public:
            continue
        with grpc.insecure_channel(target.address) as channel:
            body = requests.valid(target.request).SerializeToString()
            code, _, error = call(channel, target, body)
        checked += 1
        said = (error.details() or "") if error is not None else ""
        if code is not grpc.StatusCode.UNAUTHENTICATED or "authorization: Bearer" not in said:
            wrong.append(f"{target.path}: {code.name}: {said[:120]}")
    assert checked > 20
    assert not wrong, "\n".join(wrong)
