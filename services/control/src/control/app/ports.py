"""What the config use cases need from the outside world, as Protocols (adapters implement
them): the store of namespaces, versions and client reports, seen through one open
transaction (or one read snapshot)."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from control.domain.model import ClientReport, ConfigVersion, NamespaceSchema, NamespaceSummary


class ConfigStore(Protocol):
    """Namespaces, their versions and their clients' reports inside one open transaction.

    Versions are append-only: ``append`` takes exactly the next version of its namespace (the
    store refuses any other), and nothing rewrites or removes one.
    """

    def current(self, namespace: str) -> ConfigVersion | None:
        """The namespace's newest version, or None (no document yet)."""

    def version(self, namespace: str, version: int) -> ConfigVersion | None:
        """Version ``version`` of the namespace, or None."""

    def append(self, version: ConfigVersion) -> None:
        """Store ``version``, which must be the namespace's current version + 1."""

    def history(self, namespace: str, before: int, limit: int) -> Sequence[ConfigVersion]:
        """Up to ``limit`` versions below ``before`` (0: from the newest), newest first."""

    def after(self, namespace: str, version: int, limit: int) -> Sequence[ConfigVersion]:
        """Up to ``limit`` versions above ``version``, oldest first."""

    def schema(self, namespace: str) -> NamespaceSchema | None:
        """The namespace's registered schema, or None."""

    def set_schema(self, schema: NamespaceSchema) -> None:
        """Register (or replace) the namespace's schema."""

    def namespaces(self) -> Sequence[NamespaceSummary]:
        """Every namespace with a schema or a document, by name."""

    def latest(self) -> dict[str, int]:
        """The current version of every namespace (0: none yet), by name."""

    def report(self, report: ClientReport) -> None:
        """Store a client's report, replacing its previous one on that namespace."""

    def reports(self, namespace: str) -> Sequence[ClientReport]:
        """The latest report of each client on the namespace, by client."""

    def prune_reports(self, before: datetime.datetime) -> int:
        """Forget reports made before ``before`` (clients long gone); returns how many."""


StoreTransaction = Callable[[], AbstractContextManager[ConfigStore]]
"""Opens a transaction (or a read snapshot) and yields the store over it; commits when the
block ends, rolls back when it raises."""
