"""meshkit's public names are a promise: adding one is a decision, removing one breaks users."""

import meshkit

EXPECTED = {
    "Address",
    "AddressError",
    "Money",
    "Service",
    "ServiceContext",
    "ServiceSettings",
    "UnitOfWork",
    "address_of",
    "binding",
    "validate_address",
    "validate_money",
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
}


def test_exported_names_are_pinned() -> None:
    assert set(meshkit.__all__) == EXPECTED


def test_every_exported_name_exists_and_is_documented() -> None:
    for name in meshkit.__all__:
        value = getattr(meshkit, name)
        if callable(value):
            assert value.__doc__, f"meshkit.{name} has no docstring"
