import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mesh.api.v1 import access_pb2 as _access_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SagaState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAGA_STATE_UNSPECIFIED: _ClassVar[SagaState]
    SAGA_STATE_RUNNING: _ClassVar[SagaState]
    SAGA_STATE_COMPENSATING: _ClassVar[SagaState]
    SAGA_STATE_SUCCEEDED: _ClassVar[SagaState]
    SAGA_STATE_COMPENSATED: _ClassVar[SagaState]
SAGA_STATE_UNSPECIFIED: SagaState
SAGA_STATE_RUNNING: SagaState
SAGA_STATE_COMPENSATING: SagaState
SAGA_STATE_SUCCEEDED: SagaState
SAGA_STATE_COMPENSATED: SagaState

class ListSagasRequest(_message.Message):
    __slots__ = ("include_finished", "limit")
    INCLUDE_FINISHED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    include_finished: bool
    limit: int
    def __init__(self, include_finished: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class ListSagasResponse(_message.Message):
    __slots__ = ("sagas",)
    SAGAS_FIELD_NUMBER: _ClassVar[int]
    sagas: _containers.RepeatedCompositeFieldContainer[Saga]
    def __init__(self, sagas: _Optional[_Iterable[_Union[Saga, _Mapping]]] = ...) -> None: ...

class Saga(_message.Message):
    __slots__ = ("saga_id", "kind", "state", "step", "attempt", "started_at", "updated_at", "next_attempt_at", "age", "stuck", "last_error", "reason")
    SAGA_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_ATTEMPT_AT_FIELD_NUMBER: _ClassVar[int]
    AGE_FIELD_NUMBER: _ClassVar[int]
    STUCK_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    saga_id: str
    kind: str
    state: SagaState
    step: str
    attempt: int
    started_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    next_attempt_at: _timestamp_pb2.Timestamp
    age: _duration_pb2.Duration
    stuck: bool
    last_error: str
    reason: str
    def __init__(self, saga_id: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[_Union[SagaState, str]] = ..., step: _Optional[str] = ..., attempt: _Optional[int] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_attempt_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., age: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., stuck: _Optional[bool] = ..., last_error: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
