"""Registry storage behind one interface: `Storage`/`Transaction`, with SQLite and memory backends.

`open_storage(url)` reads URLs the way SQLAlchemy does: `sqlite:///relative/path.db`,
`sqlite:////absolute/path.db`; `memory` (or `sqlite://`, `sqlite:///:memory:`) keeps everything
in this process; `kafka://HOST:PORT[/TOPIC]` keeps it in a compacted topic (default `_schemas`)
in Confluent's record format (`schema_registry.storage.kafka`).
"""

from __future__ import annotations

from pathlib import Path

from schema_registry.storage.base import (
    GLOBAL,
    OutboxRow,
    Reference,
    Storage,
    StoredSchema,
    SubjectVersion,
    Transaction,
)
from schema_registry.storage.kafka import KafkaStorage, parse_kafka_url
from schema_registry.storage.memory import MemoryStorage
from schema_registry.storage.sqlite import SqliteStorage

__all__ = [
    "GLOBAL",
    "KafkaStorage",
    "MemoryStorage",
    "OutboxRow",
    "Reference",
    "SqliteStorage",
    "Storage",
    "StoredSchema",
    "SubjectVersion",
    "Transaction",
    "open_storage",
    "parse_kafka_url",
    "parse_storage_url",
]

#: Where `serve` keeps its data when no --storage is given (relative to the current directory).
DEFAULT_STORAGE_URL = "sqlite:///.mesh/data/schema-registry.db"


def parse_storage_url(url: str) -> Path | None:
    """The SQLite file a storage URL names, or None for storage without one (memory, kafka).

    Raises ValueError for anything else, naming the accepted forms.
    """
    if url in ("memory", "sqlite://", "sqlite:///:memory:"):
        return None
    if parse_kafka_url(url) is not None:
        return None
    prefix = "sqlite:///"
    if url.startswith(prefix) and len(url) > len(prefix):
        # sqlite:///rel.db -> "rel.db"; sqlite:////abs.db -> "/abs.db", as SQLAlchemy reads them.
        return Path(url[len(prefix) :])
    raise ValueError(
        f"unsupported storage URL {url!r}: use sqlite:///relative.db, "
        "sqlite:////absolute/path.db, kafka://HOST:PORT[/TOPIC] or memory"
    )


def open_storage(url: str) -> Storage:
    """Open (creating when missing) the storage a URL names."""
    kafka = parse_kafka_url(url)
    if kafka is not None:
        return KafkaStorage(*kafka)
    path = parse_storage_url(url)
    return MemoryStorage() if path is None else SqliteStorage(path)
