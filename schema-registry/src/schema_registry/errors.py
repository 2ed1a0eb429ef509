"""The one table of registry errors: Confluent's error codes, their HTTP statuses and messages.

Every failure the registry reports is a `RegistryError` carrying an `ErrorCode`; the HTTP edge
(`schema_registry.api`) turns it into `{"error_code": ..., "message": ...}` in exactly one place.
Codes and message wording follow Confluent's `rest/exceptions/Errors.java`, because clients and
operators grep for them.
"""

from __future__ import annotations

from enum import Enum


class ErrorCode(Enum):
    """A Confluent error: `(http_status, error_code)`."""

    # rest-utils / Jersey level: the error_code repeats the HTTP status.
    BAD_REQUEST = (400, 400)
    # rest-utils' authentication answers {"error_code": 401, "message": "Unauthorized"} (what
    # clients print as "Unauthorized; error code: 401"): Confluent has no 40101.
    UNAUTHORIZED = (401, 401)
    # Confluent's security plugin: "User is denied operation Write on Subject: x", 40301.
    FORBIDDEN = (403, 40301)
    NOT_FOUND = (404, 404)
    METHOD_NOT_ALLOWED = (405, 405)
    NOT_ACCEPTABLE = (406, 406)
    PAYLOAD_TOO_LARGE = (413, 413)
    UNSUPPORTED_MEDIA_TYPE = (415, 415)

    SUBJECT_NOT_FOUND = (404, 40401)
    VERSION_NOT_FOUND = (404, 40402)
    SCHEMA_NOT_FOUND = (404, 40403)
    SUBJECT_SOFT_DELETED = (404, 40404)
    SUBJECT_NOT_SOFT_DELETED = (404, 40405)
    VERSION_SOFT_DELETED = (404, 40406)
    VERSION_NOT_SOFT_DELETED = (404, 40407)
    SUBJECT_COMPATIBILITY_NOT_CONFIGURED = (404, 40408)
    SUBJECT_MODE_NOT_CONFIGURED = (404, 40409)
    # Confluent master answers 40901; 409 is what every released Confluent before it and Karapace
    # send, and what older clients compare against (reference §1.2).
    INCOMPATIBLE_SCHEMA = (409, 409)
    INVALID_SCHEMA = (422, 42201)
    INVALID_VERSION = (422, 42202)
    INVALID_COMPATIBILITY_LEVEL = (422, 42203)
    INVALID_MODE = (422, 42204)
    OPERATION_NOT_PERMITTED = (422, 42205)
    REFERENCE_EXISTS = (422, 42206)
    ID_DOES_NOT_MATCH = (422, 42207)
    INVALID_SUBJECT = (422, 42208)
    SCHEMA_TOO_LARGE = (422, 42209)
    STORE_ERROR = (500, 50001)
    OPERATION_TIMEOUT = (500, 50002)
    # Several instances (Kafka storage): a follower could not reach the primary, or none is known.
    FORWARDING_FAILED = (500, 50003)
    UNKNOWN_LEADER = (500, 50004)
    # Credentials cannot be checked now (identity unreachable); clients retry 503 by themselves.
    SERVICE_UNAVAILABLE = (503, 503)

    @property
    def http_status(self) -> int:
        """The HTTP status line's code."""
        return self.value[0]

    @property
    def error_code(self) -> int:
        """The `error_code` in the JSON body."""
        return self.value[1]


class RegistryError(Exception):
    """A failure to report to the client as `{"error_code", "message"}`."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# Constructors for the errors raised from more than one place, worded as Confluent words them.


def subject_not_found(subject: str) -> RegistryError:
    """40401."""
    return RegistryError(ErrorCode.SUBJECT_NOT_FOUND, f"Subject '{subject}' not found.")


def version_not_found(version: int | str) -> RegistryError:
    """40402."""
    return RegistryError(ErrorCode.VERSION_NOT_FOUND, f"Version {version} not found.")


def schema_not_found(schema_id: int | None = None) -> RegistryError:
    """40403."""
    if schema_id is None:
        return RegistryError(ErrorCode.SCHEMA_NOT_FOUND, "Schema not found")
    return RegistryError(ErrorCode.SCHEMA_NOT_FOUND, f"Schema {schema_id} not found")


def invalid_schema(detail: str) -> RegistryError:
    """42201."""
    return RegistryError(ErrorCode.INVALID_SCHEMA, f"Invalid schema: {detail}")


def invalid_version(text: str) -> RegistryError:
    """42202."""
    return RegistryError(
        ErrorCode.INVALID_VERSION,
        f"The specified version '{text}' is not a valid version id. Allowed values are between "
        '[1, 2^31-1] and the string "latest"',
    )


def not_permitted(detail: str) -> RegistryError:
    """42205."""
    return RegistryError(ErrorCode.OPERATION_NOT_PERMITTED, detail)


def reference_exists(subject: str, version: int) -> RegistryError:
    """42206."""
    return RegistryError(
        ErrorCode.REFERENCE_EXISTS,
        f"One or more references exist to the schema {{magic=1,keytype=SCHEMA,subject={subject},"
        f"version={version}}}.",
    )


class InvalidSchema(ValueError):
    """A schema text that is not a valid schema of its type; the message is shown to API users
    (the registry answers it as 42201). Every schema type's parser raises it."""
