import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from mesh.api.v1 import access_pb2 as _access_pb2
from shop.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PaymentStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PAYMENT_STATUS_UNSPECIFIED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_AUTHORIZED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_DECLINED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_CAPTURED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_VOIDED: _ClassVar[PaymentStatus]
    PAYMENT_STATUS_REFUNDED: _ClassVar[PaymentStatus]
PAYMENT_STATUS_UNSPECIFIED: PaymentStatus
PAYMENT_STATUS_AUTHORIZED: PaymentStatus
PAYMENT_STATUS_DECLINED: PaymentStatus
PAYMENT_STATUS_CAPTURED: PaymentStatus
PAYMENT_STATUS_VOIDED: PaymentStatus
PAYMENT_STATUS_REFUNDED: PaymentStatus

class Payment(_message.Message):
    __slots__ = ("payment_id", "order_id", "amount", "status", "decline_reason", "created_at", "updated_at")
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DECLINE_REASON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    order_id: str
    amount: _common_pb2.Money
    status: PaymentStatus
    decline_reason: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, payment_id: _Optional[str] = ..., order_id: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., status: _Optional[_Union[PaymentStatus, str]] = ..., decline_reason: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AuthorizePaymentRequest(_message.Message):
    __slots__ = ("idempotency_key", "order_id", "amount", "payment_token")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ORDER_ID_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_TOKEN_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    order_id: str
    amount: _common_pb2.Money
    payment_token: str
    def __init__(self, idempotency_key: _Optional[str] = ..., order_id: _Optional[str] = ..., amount: _Optional[_Union[_common_pb2.Money, _Mapping]] = ..., payment_token: _Optional[str] = ...) -> None: ...

class AuthorizePaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class CapturePaymentRequest(_message.Message):
    __slots__ = ("idempotency_key", "payment_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    payment_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., payment_id: _Optional[str] = ...) -> None: ...

class CapturePaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class VoidPaymentRequest(_message.Message):
    __slots__ = ("idempotency_key", "payment_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    payment_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., payment_id: _Optional[str] = ...) -> None: ...

class VoidPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class RefundPaymentRequest(_message.Message):
    __slots__ = ("idempotency_key", "payment_id")
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    idempotency_key: str
    payment_id: str
    def __init__(self, idempotency_key: _Optional[str] = ..., payment_id: _Optional[str] = ...) -> None: ...

class RefundPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...

class GetPaymentRequest(_message.Message):
    __slots__ = ("payment_id",)
    PAYMENT_ID_FIELD_NUMBER: _ClassVar[int]
    payment_id: str
    def __init__(self, payment_id: _Optional[str] = ...) -> None: ...

class GetPaymentResponse(_message.Message):
    __slots__ = ("payment",)
    PAYMENT_FIELD_NUMBER: _ClassVar[int]
    payment: Payment
    def __init__(self, payment: _Optional[_Union[Payment, _Mapping]] = ...) -> None: ...
