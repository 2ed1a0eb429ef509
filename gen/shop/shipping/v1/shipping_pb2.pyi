import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mesh.api.v1 import access_pb2 as _access_pb2
from shop.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShipmentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHIPMENT_STATUS_UNSPECIFIED: _ClassVar[ShipmentStatus]
    SHIPMENT_STATUS_BOOKED: _ClassVar[ShipmentStatus]
    SHIPMENT_STATUS_CANCELLED: _ClassVar[ShipmentStatus]

class ServiceLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVICE_LEVEL_UNSPECIFIED: _ClassVar[ServiceLevel]
    SERVICE_LEVEL_STANDARD: _ClassVar[ServiceLevel]
    SERVICE_LEVEL_EXPRESS: _ClassVar[ServiceLevel]
SHIPMENT_STATUS_UNSPECIFIED: ShipmentStatus
SHIPMENT_STATUS_BOOKED: ShipmentStatus
SHIPMENT_STATUS_CANCELLED: ShipmentStatus
SERVICE_LEVEL_UNSPECIFIED: ServiceLevel
SERVICE_LEVEL_STANDARD: ServiceLevel
SERVICE_LEVEL_EXPRESS: ServiceLevel

class ShipmentItem(_message.Message):
    __slots__ = ("sku", "quantity")
    SKU_FIELD_NUMBER: _ClassVar[int]
    QUANTITY_FIELD_NUMBER: _ClassVar[int]
    sku: str
    quantity: int
    def __init__(self, sku: _Optional[str] = ..., quantity: _Optional[int] = ...) -> None: ...

class Shipment(_message.Message):
    __slots__ = ("shipment_id", "order_id", "address", "items", "status", "tracking_number", "created_at", "updated_at", "service_level")
    SHIPMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TRACKING_NUMBER_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SERVICE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    shipment_id: str
    order_id: str
    address: _common_pb2.Address
    items: _containers.RepeatedCompositeFieldContainer[ShipmentItem]
    status: ShipmentStatus
    tracking_number: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    service_level: ServiceLevel
    def __init__(self, shipment_id: _Optional[str] = ..., order_id: _Optional[str] = ..., address: _Optional[_Union[_common_pb2.Address, _Mapping]] = ..., items: _Optional[_Iterable[_Union[ShipmentItem, _Mapping]]] = ..., status: _Optional[_Union[ShipmentStatus, str]] = ..., tracking_number: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., service_level: _Optional[_Union[ServiceLevel, str]] = ...) -> None: ...

class CreateShipmentRequest(_message.Message):
    __slots__ = ("idempotency_key", "order_id", "address", "items")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    order_id: str
    address: _common_pb2.Address
    items: _containers.RepeatedCompositeFieldContainer[ShipmentItem]
    def __init__(self, idempotency_key: _Optional[str] = ..., order_id: _Optional[str] = ..., address: _Optional[_Union[_common_pb2.Address, _Mapping]] = ..., items: _Optional[_Iterable[_Union[ShipmentItem, _Mapping]]] = ...) -> None: ...

class CreateShipmentResponse(_message.Message):
    __slots__ = ("shipment",)
    SHIPMENT_FIELD_NUMBER: _ClassVar[int]
    shipment: Shipment
    def __init__(self, shipment: _Optional[_Union[Shipment, _Mapping]] = ...) -> None: ...

class CancelShipmentRequest(_message.Message):
    __slots__ = ("idempotency_key", "shipment_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    SHIPMENT_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    shipment_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., shipment_id: _Optional[str] = ...) -> None: ...

class CancelShipmentResponse(_message.Message):
    __slots__ = ("shipment",)
    SHIPMENT_FIELD_NUMBER: _ClassVar[int]
    shipment: Shipment
    def __init__(self, shipment: _Optional[_Union[Shipment, _Mapping]] = ...) -> None: ...

class GetShipmentRequest(_message.Message):
    __slots__ = ("shipment_id",)
    SHIPMENT_ID_FIELD_NUMBER: _ClassVar[int]
    shipment_id: str
    def __init__(self, shipment_id: _Optional[str] = ...) -> None: ...

class GetShipmentResponse(_message.Message):
    __slots__ = ("shipment",)
    SHIPMENT_FIELD_NUMBER: _ClassVar[int]
    shipment: Shipment
    def __init__(self, shipment: _Optional[_Union[Shipment, _Mapping]] = ...) -> None: ...
