"""What the use cases need from the outside world, as Protocols (adapters implement them)."""

from __future__ import annotations

from typing import Protocol

from control.domain.events import ControlEvent
from control.domain.model import Namespace
from meshkit.ports import UnitOfWorkPort


class NamespaceRepository(Protocol):
    """Namespace resources of the current unit of work."""

    def get(self, namespace_id: str) -> Namespace | None:
        """The Namespace, or None."""

    def add(self, namespace: Namespace) -> None:
        """Store a new Namespace."""


class UnitOfWork(UnitOfWorkPort[ControlEvent], Protocol):
    """One transaction over Namespace resources; ``publish`` its events (meshkit's port)."""

    @property
    def repository(self) -> NamespaceRepository:
        """Namespace resources, inside this transaction."""
