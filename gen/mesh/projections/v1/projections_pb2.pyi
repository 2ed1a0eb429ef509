from mesh.api.v1 import access_pb2 as _access_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RebuildPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REBUILD_PHASE_UNSPECIFIED: _ClassVar[RebuildPhase]
    REBUILD_PHASE_CATCHING_UP: _ClassVar[RebuildPhase]
    REBUILD_PHASE_SWAPPING: _ClassVar[RebuildPhase]
    REBUILD_PHASE_SWAPPED: _ClassVar[RebuildPhase]
REBUILD_PHASE_UNSPECIFIED: RebuildPhase
REBUILD_PHASE_CATCHING_UP: RebuildPhase
REBUILD_PHASE_SWAPPING: RebuildPhase
REBUILD_PHASE_SWAPPED: RebuildPhase

class RebuildRequest(_message.Message):
    __slots__ = ("projection",)
    PROJECTION_FIELD_NUMBER: _ClassVar[int]
    projection: str
    def __init__(self, projection: _Optional[str] = ...) -> None: ...

class RebuildResponse(_message.Message):
    __slots__ = ("phase", "generation", "applied", "behind", "message")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    BEHIND_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    phase: RebuildPhase
    generation: int
    applied: int
    behind: int
    message: str
    def __init__(self, phase: _Optional[_Union[RebuildPhase, str]] = ..., generation: _Optional[int] = ..., applied: _Optional[int] = ..., behind: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
