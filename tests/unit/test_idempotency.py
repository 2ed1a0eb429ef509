"""Which RPCs a client's transport may retry is declared in the contracts, with the standard
``idempotency_level`` method option (issue 15), and meshkit.client follows it: a method is
retried by gRPC only when it is NO_SIDE_EFFECTS or IDEMPOTENT."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from meshkit.client import retryable

from .test_permissions import RPCS

PROTO = Path(__file__).resolve().parents[2] / "proto"
Options = descriptor_pb2.MethodOptions
READ_NAMES = re.compile(r"/(Get|List|Search|Introspect)\w*$")
# Idempotent because the request carries the key the server deduplicates on.
KEYS = ("idempotency_key", "request_id", "reservation_id")


def _level(method: str) -> int:
    name = method.lstrip("/").replace("/", ".")
    return int(descriptor_pool.Default().FindMethodByName(name).GetOptions().idempotency_level)


def _comment_before(method: str) -> str:
    """The proto comment right above ``rpc <Method>(``."""
    rpc = method.rsplit("/", 1)[1]
    for path in PROTO.rglob("*.proto"):
        lines = path.read_text().splitlines()
        for index, line in enumerate(lines):
            if line.strip().startswith(f"rpc {rpc}("):
                above = []
                for previous in reversed(lines[:index]):
                    if not previous.strip().startswith("//"):
                        break
                    above.append(previous)
                return "\n".join(above)
    raise AssertionError(f"rpc {rpc} not found in proto/")


@pytest.mark.parametrize("method", RPCS)
def test_every_rpc_decides_whether_it_may_be_retried(method: str) -> None:
    level = _level(method)
    if READ_NAMES.search(method):
        assert level == Options.NO_SIDE_EFFECTS, f"{method} reads: mark it NO_SIDE_EFFECTS"
    if level == Options.IDEMPOTENCY_UNKNOWN:
        assert "Not retried by" in _comment_before(method), (
            f"{method} has no idempotency_level: mark it, or say why it is not retried"
        )
    assert retryable(method) == (level != Options.IDEMPOTENCY_UNKNOWN)


@pytest.mark.parametrize(
    "method", [m for m in RPCS if _level(m) == Options.IDEMPOTENT and not READ_NAMES.search(m)]
)
def test_an_idempotent_write_says_what_makes_it_so(method: str) -> None:
    """A keyed write names its key; an unkeyed one says it is idempotent in its comment."""
    name = method.lstrip("/").replace("/", ".")
    fields = {f.name for f in descriptor_pool.Default().FindMethodByName(name).input_type.fields}
    assert fields & set(KEYS) or "Idempotent" in _comment_before(method), (
        f"{method} is IDEMPOTENT but has no key field and its comment does not say why"
    )


def test_health_and_unknown_methods_are_not_retried() -> None:
    assert not retryable("/grpc.health.v1.Health/Check")
    assert not retryable("/no.such.Service/Method")
