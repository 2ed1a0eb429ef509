from google.protobuf import descriptor_pb2 as _descriptor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor
ACCESS_FIELD_NUMBER: _ClassVar[int]
access: _descriptor.FieldDescriptor

class Access(_message.Message):
    __slots__ = ("public", "subject_field", "roles", "permission", "resource")
    PUBLIC_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_FIELD_NUMBER: _ClassVar[int]
    ROLES_FIELD_NUMBER: _ClassVar[int]
    PERMISSION_FIELD_NUMBER: _ClassVar[int]
    RESOURCE_FIELD_NUMBER: _ClassVar[int]
    public: bool
    subject_field: str
    roles: _containers.RepeatedScalarFieldContainer[str]
    permission: str
    resource: str
    def __init__(self, public: _Optional[bool] = ..., subject_field: _Optional[str] = ..., roles: _Optional[_Iterable[str]] = ..., permission: _Optional[str] = ..., resource: _Optional[str] = ...) -> None: ...
