"""meshkit: the runtime every service of the mesh is built on.

The public API is what this module exports (pinned by tests/unit/meshkit/test_public_api.py);
everything else is private and may change.
"""

from meshkit.address import Address, validate_address
from meshkit.addresses import AddressError, address_of
from meshkit.client import DEFAULT_TIMEOUT, check_health, connect, wait_healthy
from meshkit.db import Database, UnitOfWork
from meshkit.errors import (
    Aborted,
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    MeshError,
    NotFound,
    OutOfRange,
    PermissionDenied,
    PreconditionViolation,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Violations,
)
from meshkit.logs import configure_logging
from meshkit.money import Money, validate_money
from meshkit.server import MeshServer, ServiceBinding, create_server, run_service, status_for
from meshkit.service import Service, ServiceContext, binding
from meshkit.settings import ServerSettings, ServiceSettings, SettingsError, load_settings

__all__ = [
    "DEFAULT_TIMEOUT",
    "Aborted",
    "Address",
    "AddressError",
    "AlreadyExists",
    "Database",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "MeshError",
    "MeshServer",
    "Money",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "PreconditionViolation",
    "ResourceExhausted",
    "ServerSettings",
    "Service",
    "ServiceBinding",
    "ServiceContext",
    "ServiceSettings",
    "SettingsError",
    "Unauthenticated",
    "Unavailable",
    "UnitOfWork",
    "Violations",
    "address_of",
    "binding",
    "check_health",
    "configure_logging",
    "connect",
    "create_server",
    "load_settings",
    "run_service",
    "status_for",
    "validate_address",
    "validate_money",
    "wait_healthy",
]
