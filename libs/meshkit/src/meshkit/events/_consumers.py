"""What a service reads: the event contracts of other contexts, and consumers built over them.

A service declares the proto packages whose events it reads (``Service(consumes=(...))``); the
kit loads their contracts from the installed contracts package (the reader schemas), checks at
start that each can read every version the registry holds, and hands the service a
``Consumers`` factory: ``consumers(db, group)`` is an EventConsumer of every one of those topics,
deduplicating in ``db``'s inbox (add ``INBOX_MIGRATION`` to its migrations) and committing its
offsets as ``group``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from meshkit.db import Database
from meshkit.events._catalog import EventCatalog
from meshkit.events._consumer import EventConsumer, Handler

# A subscription to a topic that does not exist yet (nothing published there so far) is only
# re-checked at the metadata refresh interval, 5 minutes by default: too long for a reader that
# starts before its writers.
CONSUMER_CONFIG: Mapping[str, Any] = {"topic.metadata.refresh.interval.ms": 2000}


def reader_catalog(packages: Sequence[str]) -> EventCatalog:
    """Every event contract of ``packages`` (e.g. ``shop.orders.v1``), from the installed
    contracts package."""
    return EventCatalog(
        [event for package in packages for event in EventCatalog.from_package(package)]
    )


@dataclass(frozen=True)
class Consumers:
    """Builds EventConsumers of a service's reading catalog: ``(db, group) -> EventConsumer``.

    Thread safety: immutable; each call builds a new consumer (one per thread that runs it).
    """

    bootstrap: str
    registry: Any
    catalog: EventCatalog
    handlers: Mapping[str, Handler]

    @property
    def topics(self) -> list[str]:
        """The topics consumed, sorted."""
        return sorted(self.catalog.topics)

    def __call__(self, db: Database, group: str) -> EventConsumer:
        return EventConsumer(
            db,
            bootstrap=self.bootstrap,
            group=group,
            topics=self.topics,
            registry=self.registry,
            handlers=self.handlers,
            catalog=self.catalog,
            consumer_config=CONSUMER_CONFIG,
        )
