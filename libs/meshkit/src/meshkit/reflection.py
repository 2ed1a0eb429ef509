"""Server reflection that answers with the contract's comments.

protoc leaves source info (the comments of a .proto) out of the generated Python modules, so the
stock reflection servicer serves descriptors without them and `grpcurl describe` shows bare
declarations. `make gen` also writes each top-level contract package's FileDescriptorSet with
source info (``<package>/source_info.binpb``, see scripts/gen.py); this servicer copies a file's
``source_code_info`` from there into every descriptor it answers with. Everything else in the
answer is the stock servicer's, from the descriptor pool the server really runs with: a package
without the file (or a file it does not list) is served as before, without comments.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, message
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

log = logging.getLogger(__name__)

SOURCE_INFO_FILE = "source_info.binpb"


class SourceInfo:
    """The source info of each .proto file, read lazily per top-level package
    (``shop/orders/v1/x.proto`` -> the installed package ``shop``'s ``source_info.binpb``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._packages: dict[str, dict[str, descriptor_pb2.SourceCodeInfo]] = {}
        self._answers: dict[bytes, bytes] = {}

    def _package(self, top: str) -> dict[str, descriptor_pb2.SourceCodeInfo]:
        with self._lock:
            if (known := self._packages.get(top)) is not None:
                return known
            files: dict[str, descriptor_pb2.SourceCodeInfo] = {}
            path = _source_info_path(top)
            if path is not None:
                try:
                    whole = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
                except (OSError, message.DecodeError):  # a damaged file costs the comments only
                    log.warning("reflection: cannot read %s; serving without comments", path)
                else:
                    files = {f.name: f.source_code_info for f in whole.file}
            self._packages[top] = files
            return files

    def annotate(self, serialized: bytes) -> bytes:
        """``serialized`` (a FileDescriptorProto) with its file's source info, when known."""
        if (done := self._answers.get(serialized)) is not None:
            return done
        proto = descriptor_pb2.FileDescriptorProto.FromString(serialized)
        info = self._package(proto.name.split("/", 1)[0]).get(proto.name)
        if info is None or proto.HasField("source_code_info"):
            result = serialized
        else:
            proto.source_code_info.CopyFrom(info)
            result = proto.SerializeToString()
        self._answers[serialized] = result
        return result


def _source_info_path(top: str) -> Path | None:
    """``<top>/source_info.binpb`` of the installed package ``top``, if there is one."""
    if not top.isidentifier():
        return None
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / SOURCE_INFO_FILE
        if candidate.is_file():
            return candidate
    return None


class CommentedReflectionServicer(reflection.ReflectionServicer):
    """The stock v1alpha reflection servicer, its file descriptors carrying source info."""

    def __init__(self, service_names: Iterable[str], source_info: SourceInfo | None = None):
        super().__init__(list(service_names))  # type: ignore[no-untyped-call]
        self._source_info = source_info or SourceInfo()

    def ServerReflectionInfo(  # noqa: N802 - the gRPC method's name
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext
    ) -> Iterator[reflection_pb2.ServerReflectionResponse]:
        for response in super().ServerReflectionInfo(  # type: ignore[no-untyped-call]
            request_iterator, context
        ):
            if response.HasField("file_descriptor_response"):
                protos = response.file_descriptor_response.file_descriptor_proto
                protos[:] = [self._source_info.annotate(p) for p in protos]
            yield response


def enable_server_reflection(service_names: Iterable[str], server: grpc.Server) -> None:
    """Add reflection (grpc.reflection.v1alpha, which grpcurl falls back to) with comments."""
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
        CommentedReflectionServicer(service_names), server
    )


SERVICE_NAME: str = reflection.SERVICE_NAME
