"""What the audit use cases need from the outside world, as Protocols (adapters implement them):
the append-only store, seen through one open transaction, and the checkpoint signer."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from audit.domain.chain import ChainEntry, Checkpoint, Head


@dataclass(frozen=True)
class EntryFilter:
    """A search of the trail: every field set must match; newest entry first.

    ``actor`` matches the record's actor subject or the user a service acted for; ``action``
    matches exactly, or as a prefix when it ends in ``*``; ``since`` is inclusive and ``until``
    exclusive (the action's ``occurred_at``); ``before_seq`` continues a page (entries with a
    lower seq only).
    """

    actor: str = ""
    action: str = ""
    resource_type: str = ""
    resource_id: str = ""
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None
    before_seq: int | None = None
    limit: int = 50


class AuditStore(Protocol):
    """The chain's store inside one open transaction (a read-only snapshot for searches).

    Append-only: entries are only ever added at ``head().seq + 1``; the only removal is
    ``prune_through`` (retention), which leaves the checkpoint it prunes to as the anchor.
    """

    def head(self) -> Head:
        """The last entry, else the anchor, else the empty chain (seq 0, GENESIS)."""

    def contains(self, audit_id: str) -> bool:
        """True when an entry with this audit_id was ever appended and is not pruned."""

    def append(self, entry: ChainEntry) -> None:
        """Store ``entry``, which must be at ``head().seq + 1``."""

    def entry(self, seq: int) -> ChainEntry | None:
        """The entry at ``seq``, or None (never appended, or pruned)."""

    def last_checkpoint(self) -> Checkpoint | None:
        """The checkpoint with the highest seq (the anchor's, after a full prune), or None."""

    def add_checkpoint(self, checkpoint: Checkpoint) -> None:
        """Store a checkpoint of the current head."""

    def anchor(self) -> Checkpoint | None:
        """The checkpoint retention last pruned through (its entry is gone), or None."""

    def first_seq_since(self, cutoff: datetime.datetime) -> int | None:
        """The lowest seq whose action occurred at or after ``cutoff``, or None."""

    def checkpoint_before(self, seq: int) -> Checkpoint | None:
        """The checkpoint with the highest seq below ``seq``, or None."""

    def prune_through(self, checkpoint: Checkpoint) -> int:
        """Make ``checkpoint`` the anchor, delete the entries up to its seq and the checkpoints
        before it; returns how many entries went."""

    def search(self, query: EntryFilter) -> Sequence[ChainEntry]:
        """The entries ``query`` matches, by descending seq, at most ``query.limit``."""


StoreTransaction = Callable[[], AbstractContextManager[AuditStore]]
"""Opens a write transaction (or, for searches, a snapshot) and yields the store over it; the
block commits when it ends and rolls back if it raises."""


class Signer(Protocol):
    """Signs checkpoint statements. Thread safety: safe to share."""

    @property
    def key_id(self) -> str:
        """The id of its public key (``audit.domain.chain.key_id``)."""

    def sign(self, message: bytes) -> bytes:
        """The signature of ``message``."""


@dataclass(frozen=True)
class PublicKeyInfo:
    """A published checkpoint key: its id, its PEM (SubjectPublicKeyInfo) and whether it signs
    new checkpoints now."""

    key_id: str
    public_key_pem: str
    current: bool
