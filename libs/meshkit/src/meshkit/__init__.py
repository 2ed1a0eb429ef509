"""meshkit: the runtime every service of the mesh is built on.

The public API is what this module exports (pinned by tests/unit/meshkit/test_public_api.py);
everything else is private and may change.
"""

from meshkit.client import DEFAULT_TIMEOUT, check_health, connect, wait_healthy
from meshkit.db import Database
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
from meshkit.server import MeshServer, ServiceBinding, create_server, run_service, status_for
from meshkit.settings import ServerSettings, SettingsError, load_settings

__all__ = [
    "DEFAULT_TIMEOUT",
    "Aborted",
    "AlreadyExists",
    "Database",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "MeshError",
    "MeshServer",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "PreconditionViolation",
    "ResourceExhausted",
    "ServerSettings",
    "ServiceBinding",
    "SettingsError",
    "Unauthenticated",
    "Unavailable",
    "Violations",
    "check_health",
    "configure_logging",
    "connect",
    "create_server",
    "load_settings",
    "run_service",
    "status_for",
    "wait_healthy",
]
