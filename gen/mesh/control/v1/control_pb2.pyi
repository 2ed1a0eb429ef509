import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mesh.api.v1 import access_pb2 as _access_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetConfigRequest(_message.Message):
    __slots__ = ("namespace", "version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    version: int
    def __init__(self, namespace: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetConfigResponse(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: ConfigVersion
    def __init__(self, config: _Optional[_Union[ConfigVersion, _Mapping]] = ...) -> None: ...

class ConfigVersion(_message.Message):
    __slots__ = ("namespace", "version", "document", "author", "reason", "create_time", "rollback_of")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ROLLBACK_OF_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    version: int
    document: str
    author: str
    reason: str
    create_time: _timestamp_pb2.Timestamp
    rollback_of: int
    def __init__(self, namespace: _Optional[str] = ..., version: _Optional[int] = ..., document: _Optional[str] = ..., author: _Optional[str] = ..., reason: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rollback_of: _Optional[int] = ...) -> None: ...

class SetConfigRequest(_message.Message):
    __slots__ = ("namespace", "document", "reason", "expected_version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    document: str
    reason: str
    expected_version: int
    def __init__(self, namespace: _Optional[str] = ..., document: _Optional[str] = ..., reason: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class SetConfigResponse(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: ConfigVersion
    def __init__(self, config: _Optional[_Union[ConfigVersion, _Mapping]] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ("namespace", "to_version", "reason")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    TO_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    to_version: int
    reason: str
    def __init__(self, namespace: _Optional[str] = ..., to_version: _Optional[int] = ..., reason: _Optional[str] = ...) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("config",)
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    config: ConfigVersion
    def __init__(self, config: _Optional[_Union[ConfigVersion, _Mapping]] = ...) -> None: ...

class ListHistoryRequest(_message.Message):
    __slots__ = ("namespace", "page_size", "before_version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    BEFORE_VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    page_size: int
    before_version: int
    def __init__(self, namespace: _Optional[str] = ..., page_size: _Optional[int] = ..., before_version: _Optional[int] = ...) -> None: ...

class ListHistoryResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ConfigVersion]
    def __init__(self, versions: _Optional[_Iterable[_Union[ConfigVersion, _Mapping]]] = ...) -> None: ...

class ListNamespacesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListNamespacesResponse(_message.Message):
    __slots__ = ("namespaces",)
    NAMESPACES_FIELD_NUMBER: _ClassVar[int]
    namespaces: _containers.RepeatedCompositeFieldContainer[NamespaceSummary]
    def __init__(self, namespaces: _Optional[_Iterable[_Union[NamespaceSummary, _Mapping]]] = ...) -> None: ...

class NamespaceSummary(_message.Message):
    __slots__ = ("namespace", "version", "has_schema", "update_time")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    HAS_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    version: int
    has_schema: bool
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, namespace: _Optional[str] = ..., version: _Optional[int] = ..., has_schema: _Optional[bool] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("namespace", "since_version", "client")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SINCE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    since_version: int
    client: str
    def __init__(self, namespace: _Optional[str] = ..., since_version: _Optional[int] = ..., client: _Optional[str] = ...) -> None: ...

class WatchResponse(_message.Message):
    __slots__ = ("config", "snapshot")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    config: ConfigVersion
    snapshot: bool
    def __init__(self, config: _Optional[_Union[ConfigVersion, _Mapping]] = ..., snapshot: _Optional[bool] = ...) -> None: ...

class SetSchemaRequest(_message.Message):
    __slots__ = ("namespace", "schema")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    schema: str
    def __init__(self, namespace: _Optional[str] = ..., schema: _Optional[str] = ...) -> None: ...

class SetSchemaResponse(_message.Message):
    __slots__ = ("schema",)
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    schema: NamespaceSchema
    def __init__(self, schema: _Optional[_Union[NamespaceSchema, _Mapping]] = ...) -> None: ...

class GetSchemaRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class GetSchemaResponse(_message.Message):
    __slots__ = ("schema",)
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    schema: NamespaceSchema
    def __init__(self, schema: _Optional[_Union[NamespaceSchema, _Mapping]] = ...) -> None: ...

class NamespaceSchema(_message.Message):
    __slots__ = ("namespace", "schema", "author", "update_time")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    schema: str
    author: str
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, namespace: _Optional[str] = ..., schema: _Optional[str] = ..., author: _Optional[str] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReportStatusRequest(_message.Message):
    __slots__ = ("namespace", "version", "client", "accepted", "error", "running_version")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RUNNING_VERSION_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    version: int
    client: str
    accepted: bool
    error: str
    running_version: int
    def __init__(self, namespace: _Optional[str] = ..., version: _Optional[int] = ..., client: _Optional[str] = ..., accepted: _Optional[bool] = ..., error: _Optional[str] = ..., running_version: _Optional[int] = ...) -> None: ...

class ReportStatusResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListClientStatusRequest(_message.Message):
    __slots__ = ("namespace",)
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    def __init__(self, namespace: _Optional[str] = ...) -> None: ...

class ListClientStatusResponse(_message.Message):
    __slots__ = ("clients",)
    CLIENTS_FIELD_NUMBER: _ClassVar[int]
    clients: _containers.RepeatedCompositeFieldContainer[ClientStatus]
    def __init__(self, clients: _Optional[_Iterable[_Union[ClientStatus, _Mapping]]] = ...) -> None: ...

class ClientStatus(_message.Message):
    __slots__ = ("client", "version", "accepted", "error", "running_version", "report_time")
    CLIENT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    RUNNING_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPORT_TIME_FIELD_NUMBER: _ClassVar[int]
    client: str
    version: int
    accepted: bool
    error: str
    running_version: int
    report_time: _timestamp_pb2.Timestamp
    def __init__(self, client: _Optional[str] = ..., version: _Optional[int] = ..., accepted: _Optional[bool] = ..., error: _Optional[str] = ..., running_version: _Optional[int] = ..., report_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetExperimentReportRequest(_message.Message):
    __slots__ = ("key", "metric")
    KEY_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    key: str
    metric: str
    def __init__(self, key: _Optional[str] = ..., metric: _Optional[str] = ...) -> None: ...

class GetExperimentReportResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: ExperimentReport
    def __init__(self, report: _Optional[_Union[ExperimentReport, _Mapping]] = ...) -> None: ...

class ExperimentReport(_message.Message):
    __slots__ = ("key", "metric", "control", "variants", "sample_ratio", "definition")
    KEY_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    CONTROL_FIELD_NUMBER: _ClassVar[int]
    VARIANTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATIO_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_FIELD_NUMBER: _ClassVar[int]
    key: str
    metric: str
    control: str
    variants: _containers.RepeatedCompositeFieldContainer[VariantReport]
    sample_ratio: SampleRatioCheck
    definition: str
    def __init__(self, key: _Optional[str] = ..., metric: _Optional[str] = ..., control: _Optional[str] = ..., variants: _Optional[_Iterable[_Union[VariantReport, _Mapping]]] = ..., sample_ratio: _Optional[_Union[SampleRatioCheck, _Mapping]] = ..., definition: _Optional[str] = ...) -> None: ...

class VariantReport(_message.Message):
    __slots__ = ("variant", "weight", "units", "conversions", "rate", "difference", "ci_low", "ci_high", "p_value")
    VARIANT_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    CONVERSIONS_FIELD_NUMBER: _ClassVar[int]
    RATE_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    CI_LOW_FIELD_NUMBER: _ClassVar[int]
    CI_HIGH_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    variant: str
    weight: float
    units: int
    conversions: int
    rate: float
    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    def __init__(self, variant: _Optional[str] = ..., weight: _Optional[float] = ..., units: _Optional[int] = ..., conversions: _Optional[int] = ..., rate: _Optional[float] = ..., difference: _Optional[float] = ..., ci_low: _Optional[float] = ..., ci_high: _Optional[float] = ..., p_value: _Optional[float] = ...) -> None: ...

class SampleRatioCheck(_message.Message):
    __slots__ = ("chi_square", "degrees_of_freedom", "p_value", "mismatch")
    CHI_SQUARE_FIELD_NUMBER: _ClassVar[int]
    DEGREES_OF_FREEDOM_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    MISMATCH_FIELD_NUMBER: _ClassVar[int]
    chi_square: float
    degrees_of_freedom: int
    p_value: float
    mismatch: bool
    def __init__(self, chi_square: _Optional[float] = ..., degrees_of_freedom: _Optional[int] = ..., p_value: _Optional[float] = ..., mismatch: _Optional[bool] = ...) -> None: ...
