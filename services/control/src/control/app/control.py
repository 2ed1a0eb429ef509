"""Control's use cases: each runs in one unit of work (one transaction)."""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Callable

from control.app.ports import UnitOfWork
from control.domain.events import NamespaceCreated
from control.domain.model import Namespace, validate_display_name, validate_id
from meshkit import timestamps
from meshkit.errors import NotFound, Violations, quoted


class ControlUseCases:
    """Creates and reads Namespace resources. Thread safety: safe to share; every call opens its own
    unit of work."""

    def __init__(
        self,
        unit_of_work: Callable[[], UnitOfWork],
        clock: Callable[[], datetime.datetime] = timestamps.now,
        new_id: Callable[[], str] = lambda: uuid.uuid4().hex,
    ) -> None:
        self._uow = unit_of_work
        self._clock = clock
        self._new_id = new_id

    def create(self, display_name: str) -> Namespace:
        """A new Namespace; its NamespaceCreated event commits with it."""
        violations = Violations()
        validate_display_name(violations, display_name)
        violations.raise_if_any()
        namespace = Namespace(self._new_id(), display_name.strip(), self._clock())
        with self._uow() as uow:
            uow.repository.add(namespace)
            uow.publish(
                NamespaceCreated(
                    namespace.namespace_id, namespace.display_name, namespace.created_at
                )
            )
        return namespace

    def get(self, namespace_id: str) -> Namespace:
        """The Namespace ``namespace_id``; NotFound when there is none."""
        violations = Violations()
        validate_id(violations, namespace_id)
        violations.raise_if_any()
        with self._uow() as uow:
            namespace = uow.repository.get(namespace_id)
        if namespace is None:
            raise NotFound(
                f"unknown namespace {quoted(namespace_id)}",
                reason="NAMESPACE_NOT_FOUND",
                metadata={"namespace_id": namespace_id},
            )
        return namespace
