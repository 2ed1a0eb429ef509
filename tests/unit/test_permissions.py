"""Every RPC of the contracts declares who may call it, and every service's Cedar policy speaks
of permissions the contracts declare (issue 14: an RPC without the option is denied, so one
missing here would be an RPC nobody can call)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

from meshkit import authz

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "proto"
SERVICES = REPO / "services"


def _import_contracts() -> list[str]:
    """Import every generated *_pb2 module of proto/ (registering its descriptors); returns
    the full names of every gRPC service they define."""
    names = []
    for path in sorted(PROTO.rglob("*.proto")):
        if "vendor" in path.parts:
            continue
        module = ".".join(path.relative_to(PROTO).with_suffix("").parts) + "_pb2"
        loaded = importlib.import_module(module)
        names += [s.full_name for s in loaded.DESCRIPTOR.services_by_name.values()]
    return names


SERVICE_NAMES = _import_contracts()


def _rpcs() -> list[str]:
    pool = descriptor_pool.Default()
    return [
        f"/{name}/{method.name}"
        for name in SERVICE_NAMES
        for method in pool.FindServiceByName(name).methods
    ]


RPCS = _rpcs()
PERMISSIONS = {authz.rule_of(m).permission for m in RPCS} - {""}


def test_the_contracts_have_rpcs_to_check() -> None:
    assert len(RPCS) > 30 and "/shop.orders.v1.OrdersService/GetOrder" in RPCS


@pytest.mark.parametrize("method", RPCS)
def test_every_rpc_declares_a_permission_or_public(method: str) -> None:
    rule = authz.rule_of(method)
    assert rule.declared, f"{method} has no option (mesh.api.v1.access): it would be denied"
    assert rule.public != bool(rule.permission), f"{method}: either public or a permission"
    assert not (rule.public and rule.resource), f"{method}: a public RPC names no resource"


@pytest.mark.parametrize("method", RPCS)
def test_resource_and_subject_fields_exist_in_the_request(method: str) -> None:
    rule = authz.rule_of(method)
    service, _, name = method.lstrip("/").partition("/")
    request = descriptor_pool.Default().FindMethodByName(f"{service}.{name}").input_type
    for field in (rule.resource, rule.subject_field):
        if field:
            assert field in request.fields_by_name, f"{method}: {request.name} has no {field}"


POLICIES = sorted(SERVICES.glob("*/src/*/policy.cedar"))
ACTION = re.compile(r'Action::"([^"]+)"')


def test_every_service_serving_private_rpcs_has_a_policy() -> None:
    have = {p.parent.name for p in POLICIES}
    served = {p.parent.name for p in SERVICES.glob("*/src/*/bootstrap.py")}
    assert served - {"gateway"} <= have, f"services without policy.cedar: {served - have}"


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: p.parent.name)
def test_policies_parse_and_name_only_declared_permissions(policy: Path) -> None:
    text = policy.read_text()
    authz.Policy(text, name=str(policy))  # parses, or raises naming the file
    unknown = set(ACTION.findall(text)) - PERMISSIONS
    assert not unknown, f"{policy}: actions no contract declares (typos?): {sorted(unknown)}"


def test_every_declared_permission_is_granted_to_someone() -> None:
    granted = {a for p in POLICIES for a in ACTION.findall(p.read_text())}
    assert PERMISSIONS - granted == set(), "permissions no policy grants: nobody could call them"
