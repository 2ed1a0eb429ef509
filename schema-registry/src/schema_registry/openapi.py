"""The registry's own OpenAPI 3.1 description, served at ``GET /openapi.json``.

Contract
--------
``openapi_document(version)`` returns the document as a fresh dict: one operation for every
route `schema_registry.api.Api` serves (``Api.routes()``; a unit test fails on a route without an
operation here, or an operation without a route), with its path and query parameters, its request
body and its answers: the 200 and every error it can give, each error status with the
``error_code`` values it carries, in Confluent's ``{"error_code": int, "message": str}`` shape.

Errors every route can give are added to each: 400 (a malformed request, or a query number that
is not one), 406 (an Accept we cannot answer) and 500 (50001, the store failed); 404 (404) where
a path parameter does not parse; 413 and 415 where there is a body; 401, 403 and 503 on the
writes ``serve --auth`` guards. HEAD is answered wherever GET is and not listed.

The document is plain data built by a pure function: `Api` builds it once, on first request, and
serves it like any other cached read. It is what the fuzz test (schemathesis) generates requests
from, so a route documented too narrowly is a route not fuzzed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from schema_registry.avro import COMPATIBILITY_LEVELS
from schema_registry.errors import ErrorCode
from schema_registry.registry import KNOWN_TYPES, MODES

TITLE: Final = "meshkit schema registry"
_SCHEMAS: Final = "#/components/schemas/"
_PARAMETERS: Final = "#/components/parameters/"
#: What the registry answers in (and, for bodies, reads: it also reads application/octet-stream,
#: as Confluent does, left out here so generated requests stay JSON).
MEDIA_TYPES: Final = (
    "application/vnd.schemaregistry.v1+json",
    "application/vnd.schemaregistry+json",
    "application/json",
)
_E = ErrorCode
_COMMON: Final = (_E.BAD_REQUEST, _E.NOT_ACCEPTABLE, _E.STORE_ERROR)
_WITH_BODY: Final = (_E.PAYLOAD_TOO_LARGE, _E.UNSUPPORTED_MEDIA_TYPE)
_GUARDED: Final = (_E.UNAUTHORIZED, _E.FORBIDDEN, _E.SERVICE_UNAVAILABLE)
# A schema in a request: invalid, a reference's version not one, too large.
_SCHEMA_IN: Final = (_E.INVALID_SCHEMA, _E.INVALID_VERSION, _E.SCHEMA_TOO_LARGE)
_VERSION_OF: Final = (_E.SUBJECT_NOT_FOUND, _E.VERSION_NOT_FOUND, _E.INVALID_VERSION)


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _SCHEMAS + name}


def _array(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


_STRING: Final[dict[str, Any]] = {"type": "string"}
_INT: Final[dict[str, Any]] = {"type": "integer"}
_OBJECT: Final[dict[str, Any]] = {"type": "object"}
_ANY_JSON: Final[dict[str, Any]] = {"description": "any JSON value"}


@dataclass(frozen=True)
class _Op:
    """One operation: what it is for, its parameters (names in ``_PARAMS``), its body (a
    component name), its 200 schema and the errors only it gives (the common ones are added)."""

    tag: str
    summary: str
    ok: dict[str, Any]
    params: Sequence[str] = ()
    body: str | None = None
    errors: Sequence[ErrorCode] = ()
    guarded: bool = False
    ok_media_types: Sequence[str] = MEDIA_TYPES


_PAGE: Final = ("offset", "limit")
_SUBJECT: Final = ("subject",)
_SUBJECT_VERSION: Final = ("subject", "version")
_ID: Final = ("id",)

_OPERATIONS: Final[dict[tuple[str, str], _Op]] = {
    ("GET", "/"): _Op("server", "An empty object: the registry is up", _OBJECT),
    ("POST", "/"): _Op(
        "server", "Confluent's no-op: answers an empty object, changes nothing", _OBJECT, body="Any"
    ),
    ("GET", "/openapi.json"): _Op(
        "server",
        "This document",
        _OBJECT,
        ok_media_types=("application/json",),
    ),
    ("GET", "/v1/metadata/id"): _Op("server", "The cluster id", _ref("ServerClusterId")),
    ("GET", "/v1/metadata/version"): _Op("server", "The server version", _ref("ServerVersion")),
    ("GET", "/contexts"): _Op(
        "server", "The schema contexts (only the default one, '.')", _array(_STRING), _PAGE
    ),
    ("GET", "/subjects"): _Op(
        "subjects",
        "Subject names",
        _array(_STRING),
        ("subjectPrefix", "subjectAsPrefix", "deleted", "deletedOnly", *_PAGE),
    ),
    ("POST", "/subjects/{subject}"): _Op(
        "subjects",
        "Look up a schema under a subject: the version holding it",
        _ref("Schema"),
        (*_SUBJECT, "normalize", "deleted"),
        body="RegisterSchemaRequest",
        errors=(_E.SUBJECT_NOT_FOUND, _E.SCHEMA_NOT_FOUND, *_SCHEMA_IN),
    ),
    ("DELETE", "/subjects/{subject}"): _Op(
        "subjects",
        "Soft-delete a subject's versions, or (permanent=true, after that) remove them",
        _array(_INT),
        (*_SUBJECT, "permanent"),
        errors=(
            _E.SUBJECT_NOT_FOUND,
            _E.SUBJECT_SOFT_DELETED,
            _E.SUBJECT_NOT_SOFT_DELETED,
            _E.OPERATION_NOT_PERMITTED,
            _E.REFERENCE_EXISTS,
        ),
        guarded=True,
    ),
    ("GET", "/subjects/{subject}/versions"): _Op(
        "subjects",
        "A subject's version numbers",
        _array(_INT),
        (*_SUBJECT, "deleted", "deletedOnly", "deletedAsNegative", *_PAGE),
        errors=(_E.SUBJECT_NOT_FOUND,),
    ),
    ("POST", "/subjects/{subject}/versions"): _Op(
        "subjects",
        "Register a schema under a subject (idempotent: the same schema gets the same version)",
        _ref("RegisterSchemaResponse"),
        (*_SUBJECT, "normalize"),
        body="RegisterSchemaRequest",
        errors=(
            _E.INCOMPATIBLE_SCHEMA,
            *_SCHEMA_IN,
            _E.OPERATION_NOT_PERMITTED,
            _E.ID_DOES_NOT_MATCH,
            _E.INVALID_SUBJECT,
        ),
        guarded=True,
    ),
    ("GET", "/subjects/{subject}/versions/{version}"): _Op(
        "subjects",
        "One version of a subject",
        _ref("Schema"),
        (*_SUBJECT_VERSION, "deleted", "format"),
        errors=_VERSION_OF,
    ),
    ("DELETE", "/subjects/{subject}/versions/{version}"): _Op(
        "subjects",
        "Soft-delete one version, or (permanent=true, after that) remove it",
        _INT,
        (*_SUBJECT_VERSION, "permanent"),
        errors=(
            *_VERSION_OF,
            _E.VERSION_SOFT_DELETED,
            _E.VERSION_NOT_SOFT_DELETED,
            _E.OPERATION_NOT_PERMITTED,
            _E.REFERENCE_EXISTS,
        ),
        guarded=True,
    ),
    ("GET", "/subjects/{subject}/versions/{version}/schema"): _Op(
        "subjects",
        "One version's schema text, as it is",
        _ANY_JSON,
        (*_SUBJECT_VERSION, "deleted", "format"),
        errors=_VERSION_OF,
    ),
    ("GET", "/subjects/{subject}/versions/{version}/referencedby"): _Op(
        "subjects",
        "Ids of the schemas that reference this version",
        _array(_INT),
        (*_SUBJECT_VERSION, "deleted", *_PAGE),
        errors=_VERSION_OF,
    ),
    ("GET", "/subjects/{subject}/metadata"): _Op(
        "subjects",
        "The latest version whose metadata properties have every key=value given",
        _ref("Schema"),
        (*_SUBJECT, "key", "value", "deleted"),
        errors=(_E.SUBJECT_NOT_FOUND, _E.SCHEMA_NOT_FOUND),
    ),
    ("GET", "/schemas"): _Op(
        "schemas",
        "Every (live) version of every subject",
        _array(_ref("Schema")),
        ("subjectPrefix", "deleted", "latestOnly", *_PAGE),
    ),
    ("GET", "/schemas/types"): _Op("schemas", "The schema types checked", _array(_STRING)),
    ("GET", "/schemas/ids/{id}"): _Op(
        "schemas",
        "A schema by its id",
        _ref("SchemaById"),
        (*_ID, "subjectHint", "format", "fetchMaxId"),
        errors=(_E.SCHEMA_NOT_FOUND,),
    ),
    ("GET", "/schemas/ids/{id}/schema"): _Op(
        "schemas",
        "A schema's text by its id, as it is",
        _ANY_JSON,
        (*_ID, "subjectHint", "format"),
        errors=(_E.SCHEMA_NOT_FOUND,),
    ),
    ("GET", "/schemas/ids/{id}/subjects"): _Op(
        "schemas",
        "The subjects using a schema",
        _array(_STRING),
        (*_ID, "subjectHint", "deleted", *_PAGE),
        errors=(_E.SCHEMA_NOT_FOUND,),
    ),
    ("GET", "/schemas/ids/{id}/versions"): _Op(
        "schemas",
        "The subject versions using a schema",
        _array(_ref("SubjectVersion")),
        (*_ID, "subjectHint", "deleted", *_PAGE),
        errors=(_E.SCHEMA_NOT_FOUND,),
    ),
    ("POST", "/compatibility/subjects/{subject}/versions"): _Op(
        "compatibility",
        "Check a schema against the versions the subject's level compares with",
        _ref("CompatibilityCheckResponse"),
        (*_SUBJECT, "normalize", "verbose"),
        body="RegisterSchemaRequest",
        errors=_SCHEMA_IN,
        guarded=True,
    ),
    ("POST", "/compatibility/subjects/{subject}/versions/{version}"): _Op(
        "compatibility",
        "Check a schema against one version ('latest' may be missing: then compatible)",
        _ref("CompatibilityCheckResponse"),
        (*_SUBJECT_VERSION, "normalize", "verbose"),
        body="RegisterSchemaRequest",
        errors=(*_SCHEMA_IN, _E.VERSION_NOT_FOUND),
        guarded=True,
    ),
    ("GET", "/config"): _Op(
        "config", "The global compatibility level", _ref("Config"), ("defaultToGlobal",)
    ),
    ("PUT", "/config"): _Op(
        "config",
        "Set the global compatibility level (answers the request's shape)",
        _ref("ConfigUpdateAnswer"),
        body="ConfigUpdateRequest",
        errors=(_E.INVALID_COMPATIBILITY_LEVEL,),
        guarded=True,
    ),
    ("DELETE", "/config"): _Op(
        "config",
        "Back to the default level; answers the config removed",
        _ref("Config"),
        guarded=True,
    ),
    ("GET", "/config/{subject}"): _Op(
        "config",
        "A subject's compatibility level (defaultToGlobal: else the global one)",
        _ref("Config"),
        (*_SUBJECT, "defaultToGlobal"),
        errors=(_E.SUBJECT_COMPATIBILITY_NOT_CONFIGURED,),
    ),
    ("PUT", "/config/{subject}"): _Op(
        "config",
        "Set a subject's compatibility level (answers the request's shape)",
        _ref("ConfigUpdateAnswer"),
        _SUBJECT,
        body="ConfigUpdateRequest",
        errors=(_E.INVALID_COMPATIBILITY_LEVEL, _E.INVALID_SUBJECT),
        guarded=True,
    ),
    ("DELETE", "/config/{subject}"): _Op(
        "config",
        "Remove a subject's level; answers the config removed",
        _ref("Config"),
        _SUBJECT,
        errors=(_E.SUBJECT_NOT_FOUND,),
        guarded=True,
    ),
    ("GET", "/mode"): _Op("mode", "The global mode", _ref("Mode"), ("defaultToGlobal",)),
    ("PUT", "/mode"): _Op(
        "mode",
        "Set the global mode (IMPORT needs an empty registry, or force=true)",
        _ref("Mode"),
        ("force",),
        body="Mode",
        errors=(_E.INVALID_MODE, _E.OPERATION_NOT_PERMITTED),
        guarded=True,
    ),
    ("DELETE", "/mode"): _Op(
        "mode",
        "Back to the default mode (recursive: subjects' modes too); answers the old mode",
        _ref("Mode"),
        ("recursive",),
        guarded=True,
    ),
    ("GET", "/mode/{subject}"): _Op(
        "mode",
        "A subject's mode (defaultToGlobal: else the global one)",
        _ref("Mode"),
        (*_SUBJECT, "defaultToGlobal"),
        errors=(_E.SUBJECT_MODE_NOT_CONFIGURED,),
    ),
    ("PUT", "/mode/{subject}"): _Op(
        "mode",
        "Set a subject's mode (IMPORT needs an empty subject, or force=true)",
        _ref("Mode"),
        (*_SUBJECT, "force"),
        body="Mode",
        errors=(_E.INVALID_MODE, _E.OPERATION_NOT_PERMITTED, _E.INVALID_SUBJECT),
        guarded=True,
    ),
    ("DELETE", "/mode/{subject}"): _Op(
        "mode",
        "Remove a subject's mode; answers it",
        _ref("Mode"),
        _SUBJECT,
        errors=(_E.SUBJECT_NOT_FOUND,),
        guarded=True,
    ),
}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _flag(name: str, description: str) -> dict[str, Any]:
    return _query(name, {"type": "boolean"}, f"{description} (only 'true', in any case, is true)")


_INT32: Final[dict[str, Any]] = {"type": "integer", "format": "int32"}

# Parameters by the names the operations above use (the component name; "name" is the wire's).
_PARAMS: Final[dict[str, dict[str, Any]]] = {
    "subject": {
        "name": "subject",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1},
        "description": "A subject name, one path segment: percent-encode '/' as %2F",
    },
    "version": {
        "name": "version",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "pattern": "^(latest|-1|[1-9][0-9]{0,9})$"},
        "description": "1 to 2^31-1, or 'latest' (-1 is latest too)",
    },
    "id": {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "integer", "format": "int32", "minimum": 1},
        "description": "A schema id (not an integer within 32 bits: 404)",
    },
    "offset": _query("offset", {**_INT32, "minimum": 0}, "Skip this many items"),
    "limit": _query("limit", _INT32, "At most this many items (0 or less: all)"),
    "deleted": _flag("deleted", "Include soft-deleted ones"),
    "deletedOnly": _flag("deletedOnly", "Only soft-deleted ones"),
    "deletedAsNegative": _flag("deletedAsNegative", "Soft-deleted versions as negative numbers"),
    "permanent": _flag("permanent", "Remove for good (after a soft delete)"),
    "normalize": _flag("normalize", "Normalize the schema first, as Confluent does"),
    "verbose": _flag("verbose", "Say why not: messages and incompatibilities"),
    "defaultToGlobal": _flag("defaultToGlobal", "Fall back to the global setting"),
    "force": _flag("force", "IMPORT even though subjects exist"),
    "recursive": _flag("recursive", "Remove the subjects' modes too"),
    "latestOnly": _flag("latestOnly", "Only each subject's latest version"),
    "fetchMaxId": _flag("fetchMaxId", "Add maxId, the highest schema id"),
    "format": _query(
        "format",
        _STRING,
        "'resolved': referenced types written out where first used; else the stored text",
    ),
    "subjectPrefix": _query("subjectPrefix", _STRING, "Only subjects starting with this"),
    "subjectAsPrefix": _query(
        "subject", _STRING, "subjectPrefix as confluent-kafka-python spells it"
    ),
    "subjectHint": _query(
        "subject", _STRING, "A context hint, as in Confluent: never a filter (any id resolves)"
    ),
    "key": {
        **_query("key", _array(_STRING), "Metadata property names, paired with value"),
        "style": "form",
        "explode": True,
    },
    "value": {
        **_query("value", _array(_STRING), "Metadata property values, paired with key"),
        "style": "form",
        "explode": True,
    },
}

_SCHEMA_FIELDS: Final[dict[str, Any]] = {
    "schemaType": {"type": "string", "enum": list(KNOWN_TYPES), "default": "AVRO"},
    "references": _array(_ref("SchemaReference")),
    "metadata": _ref("Metadata"),
    "ruleSet": _ref("RuleSet"),
}

_COMPONENTS: Final[dict[str, dict[str, Any]]] = {
    "ErrorMessage": {
        "type": "object",
        "description": "Every error answer, as Confluent's ErrorMessage",
        "required": ["error_code", "message"],
        "properties": {"error_code": _INT, "message": _STRING},
    },
    "Any": {"description": "Any JSON; ignored"},
    "SchemaReference": {
        "type": "object",
        "required": ["name", "subject", "version"],
        "properties": {"name": _STRING, "subject": _STRING, "version": _INT},
    },
    "Metadata": {
        "type": "object",
        "description": "Stored as given; part of a schema's identity",
        "properties": {
            "tags": {"type": "object", "additionalProperties": _array(_STRING)},
            "properties": {"type": "object", "additionalProperties": _STRING},
            "sensitive": _array(_STRING),
        },
    },
    "RuleSet": {
        "type": "object",
        "description": "Stored as given; part of a schema's identity",
        "properties": {
            "migrationRules": _array(_OBJECT),
            "domainRules": _array(_OBJECT),
            "encodingRules": _array(_OBJECT),
        },
    },
    "RegisterSchemaRequest": {
        "type": "object",
        "description": "Unknown fields are ignored, never refused (newer clients send more)",
        "required": ["schema"],
        "properties": {
            "schema": {"type": "string", "description": "The schema's text (Avro: JSON)"},
            **_SCHEMA_FIELDS,
            "id": {**_INT, "description": "IMPORT mode only: the id to keep"},
            "version": {**_INT, "description": "IMPORT mode only: the version to keep"},
        },
    },
    "RegisterSchemaResponse": {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": _INT,
            "subject": _STRING,
            "version": _INT,
            "schema": _STRING,
            **_SCHEMA_FIELDS,
        },
    },
    "Schema": {
        "type": "object",
        "description": "A subject version",
        "required": ["subject", "version", "id", "schema"],
        "properties": {
            "subject": _STRING,
            "version": _INT,
            "id": _INT,
            "schema": _STRING,
            **_SCHEMA_FIELDS,
            "deleted": {"type": "boolean"},
        },
    },
    "SchemaById": {
        "type": "object",
        "required": ["schema"],
        "properties": {"schema": _STRING, **_SCHEMA_FIELDS, "maxId": _INT},
    },
    "SubjectVersion": {
        "type": "object",
        "required": ["subject", "version"],
        "properties": {"subject": _STRING, "version": _INT},
    },
    "CompatibilityCheckResponse": {
        "type": "object",
        "required": ["is_compatible"],
        "properties": {
            "is_compatible": {"type": "boolean"},
            "messages": {
                **_array(_STRING),
                "description": "verbose only: Confluent's rendering of each incompatibility",
            },
            "incompatibilities": {
                **_array(_OBJECT),
                "description": "verbose only: rule, path, direction, message and fragments",
            },
        },
    },
    "Config": {
        "type": "object",
        "description": "Other keys stored with the level (normalize, ...) are answered too; a "
        "subject's config set without a level has none (the global one always has one)",
        "properties": {
            "compatibilityLevel": {"type": "string", "enum": list(COMPATIBILITY_LEVELS)},
        },
    },
    "ConfigUpdateRequest": {
        "type": "object",
        "description": "`compatibility` (Confluent's request key; compatibilityLevel is read "
        "too, as some clients send it); other keys are stored as given",
        "properties": {
            "compatibility": {"type": "string", "enum": list(COMPATIBILITY_LEVELS)},
            "compatibilityLevel": {"type": "string", "enum": list(COMPATIBILITY_LEVELS)},
            "normalize": {"type": "boolean"},
        },
    },
    "ConfigUpdateAnswer": {
        "type": "object",
        "description": "The request's keys as stored: `compatibility` (upper case) and the rest "
        "as given",
        "properties": {
            "compatibility": {"type": "string", "enum": list(COMPATIBILITY_LEVELS)},
        },
    },
    "Mode": {
        "type": "object",
        "required": ["mode"],
        "properties": {"mode": {"type": "string", "enum": list(MODES)}},
    },
    "ServerClusterId": {
        "type": "object",
        "required": ["id", "scope"],
        "properties": {"id": _STRING, "scope": _OBJECT},
    },
    "ServerVersion": {
        "type": "object",
        "required": ["version", "commitId"],
        "properties": {"version": _STRING, "commitId": _STRING},
    },
}


def _content(schema: dict[str, Any], media_types: Iterable[str] = MEDIA_TYPES) -> dict[str, Any]:
    return {media_type: {"schema": schema} for media_type in media_types}


def _errors_of(op: _Op, path: str) -> list[ErrorCode]:
    codes = [*_COMMON, *op.errors]
    if "{" in path:
        codes.append(_E.NOT_FOUND)  # a path segment that does not parse (Jersey's answer)
    if op.body is not None:
        codes.extend(_WITH_BODY)
    if op.guarded:
        codes.extend(_GUARDED)
    return list(dict.fromkeys(codes))


def _responses(op: _Op, path: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "200": {"description": "OK", "content": _content(op.ok, op.ok_media_types)}
    }
    by_status: dict[int, list[ErrorCode]] = {}
    for code in _errors_of(op, path):
        by_status.setdefault(code.http_status, []).append(code)
    for status in sorted(by_status):
        codes = by_status[status]
        described = "; ".join(f"{c.error_code}: {c.name.lower().replace('_', ' ')}" for c in codes)
        schema = {
            "allOf": [
                _ref("ErrorMessage"),
                {"properties": {"error_code": {"enum": sorted({c.error_code for c in codes})}}},
            ]
        }
        out[str(status)] = {"description": described, "content": _content(schema)}
    return out


def _operation(method: str, path: str, op: _Op) -> dict[str, Any]:
    words = [w.strip("{}") for w in path.split("/") if w] or ["root"]
    operation: dict[str, Any] = {
        "operationId": "_".join([method.lower(), *words]).replace(".", "_"),
        "tags": [op.tag],
        "summary": op.summary,
        "responses": _responses(op, path),
    }
    if op.params:
        operation["parameters"] = [{"$ref": _PARAMETERS + name} for name in op.params]
    if op.body is not None:
        operation["requestBody"] = {
            "required": op.body != "Any",
            "content": _content(_ref(op.body)),
        }
    if op.guarded:
        # Optional unless the registry serves with --auth; then scope schemas:write is needed.
        operation["security"] = [{}, {"bearer": []}, {"basic": []}]
    return operation


def documented_routes() -> list[tuple[str, str]]:
    """Every (method, path pattern) the document describes."""
    return list(_OPERATIONS)


def openapi_document(version: str) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the registry at package ``version`` (a new dict each call)."""
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), op in _OPERATIONS.items():
        paths.setdefault(path, {})[method.lower()] = _operation(method, path, op)
    # Deep-copied: the parts are module constants shared by many operations.
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": TITLE,
                "version": version,
                "description": "A Confluent Schema Registry compatible REST API (Avro schemas). "
                'Every error answers {"error_code": int, "message": str}, Confluent\'s codes; '
                "reads are open, writes need scope schemas:write when the registry serves with "
                "--auth. Bodies may also be sent as application/octet-stream, as Confluent allows.",
            },
            "tags": [
                {"name": name}
                for name in ("schemas", "subjects", "compatibility", "config", "mode", "server")
            ],
            "paths": paths,
            "components": {
                "schemas": _COMPONENTS,
                "parameters": _PARAMS,
                "securitySchemes": {
                    "bearer": {
                        "type": "http",
                        "scheme": "bearer",
                        "bearerFormat": "JWT",
                        "description": "An access token from identity with scope schemas:write",
                    },
                    "basic": {
                        "type": "http",
                        "scheme": "basic",
                        "description": "OAuth client credentials (client id and secret) of a "
                        "client allowed scope schemas:write",
                    },
                },
            },
        }
    )


__all__ = ["MEDIA_TYPES", "TITLE", "documented_routes", "openapi_document"]
