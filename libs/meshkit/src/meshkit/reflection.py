"""Server reflection that answers with the contract's comments.

protoc leaves source info (the comments of a .proto) out of the generated Python modules, so the
stock reflection servicer serves descriptors without them and `grpcurl describe` shows bare
declarations. `make gen` also writes each contract's source info beside its module
(``shop/orders/v1/orders.proto`` -> ``shop/orders/v1/orders.source_info.binpb`` in the installed
package ``shop``, see scripts/gen.py); this servicer copies it into every file descriptor it
answers with. Everything else in the answer is the stock servicer's, from the descriptor pool the
server really runs with: a file without source info is served as before, without comments.
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

SOURCE_INFO_SUFFIX = ".source_info.binpb"


class SourceInfo:
    """Each .proto file's source info, read once from beside its generated module."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, descriptor_pb2.SourceCodeInfo | None] = {}
        self._answers: dict[bytes, bytes] = {}

    def _info(self, name: str) -> descriptor_pb2.SourceCodeInfo | None:
        with self._lock:
            if name in self._files:
                return self._files[name]
            info = None
            path = _source_info_path(name)
            if path is not None:
                try:
                    info = descriptor_pb2.SourceCodeInfo.FromString(path.read_bytes())
                except (OSError, message.DecodeError):  # a damaged file costs its comments only
                    log.warning("reflection: cannot read %s; serving without comments", path)
            self._files[name] = info
            return info

    def annotate(self, serialized: bytes) -> bytes:
        """``serialized`` (a FileDescriptorProto) with its file's source info, when known."""
        if (done := self._answers.get(serialized)) is not None:
            return done
        proto = descriptor_pb2.FileDescriptorProto.FromString(serialized)
        info = self._info(proto.name)
        if info is None or proto.HasField("source_code_info"):
            result = serialized
        else:
            proto.source_code_info.CopyFrom(info)
            result = proto.SerializeToString()
        self._answers[serialized] = result
        return result


def _source_info_path(name: str) -> Path | None:
    """Where the source info of the .proto file ``name`` lies in its installed top-level
    package (``shop/orders/v1/orders.proto`` -> <shop>/orders/v1/orders.source_info.binpb)."""
    top, _, rest = name.partition("/")
    if not top.isidentifier() or not rest.endswith(".proto") or ".." in rest.split("/"):
        return None
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / (rest.removesuffix(".proto") + SOURCE_INFO_SUFFIX)
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
