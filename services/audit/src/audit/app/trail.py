"""The audit trail's use cases: append a record exactly once, sign checkpoints, prune by
retention without breaking verification, and search.

Exactly once: ``append`` runs inside the Kafka consumer's transaction, the same one that writes
the inbox mark (``meshkit.events``), and skips a record whose ``audit_id`` is stored already; the
audit_id is also UNIQUE in the store. A redelivery (a crash before the offset commit), a replay
of a dead letter or of the whole topic by a new consumer group therefore appends nothing twice,
and nothing committed is lost: the offset is committed only after the entry is.

Checkpoints: after an append that leaves ``checkpoint_every`` entries unsigned, a checkpoint is
signed in the same transaction; the maintenance worker signs when the oldest unsigned entry has
waited ``checkpoint_after`` (whichever comes first). No checkpoint is written without new
entries.

Retention: entries whose action is older than the retention period are pruned, but only through
a checkpoint: the entries up to the last checkpoint before the first entry still kept go, and
that checkpoint stays as the *anchor*. Verification then starts from the anchor's signed hash,
so the rest still verifies, and what was pruned is stated (the anchor's seq), never silent.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from audit.app.ports import AuditStore, EntryFilter, PublicKeyInfo, Signer, StoreTransaction
from audit.domain.chain import ChainEntry, Checkpoint, checkpoint_statement
from meshkit import timestamps
from meshkit.errors import Violations

log = logging.getLogger("audit.trail")

Clock = Callable[[], datetime.datetime]


class AuditTrail:
    """Appends records to the chain and signs checkpoints. Thread safety: safe to share; every
    call works in the transaction of the store it is given (the caller's)."""

    def __init__(
        self,
        signer: Signer,
        *,
        checkpoint_every: int = 100,
        checkpoint_after: datetime.timedelta = datetime.timedelta(seconds=10),
        clock: Clock = timestamps.now,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self._signer = signer
        self._every = checkpoint_every
        self._after = checkpoint_after
        self._clock = clock

    def append(self, store: AuditStore, record: Mapping[str, Any]) -> ChainEntry | None:
        """Append ``record`` (an AuditRecorded as decoded) after the head; None when its audit_id
        is stored already (a redelivery or replay). Signs a checkpoint when this append leaves
        ``checkpoint_every`` entries unsigned. ValueError/CanonicalError for a record that
        cannot be an entry (no audit_id, a value canonical JSON does not cover)."""
        audit_id = str(record.get("audit_id") or "")
        if audit_id and store.contains(audit_id):
            log.info("audit record %s is in the trail already; not appended again", audit_id)
            return None
        entry = ChainEntry.after(store.head(), record, self._clock())
        store.append(entry)
        if entry.seq - self._signed_through(store) >= self._every:
            self.checkpoint(store)
        return entry

    def checkpoint(self, store: AuditStore) -> Checkpoint | None:
        """Sign the head now if any entry after the last checkpoint is unsigned, else None."""
        head = store.head()
        if head.seq <= self._signed_through(store):
            return None
        signed_at = self._clock()
        statement = checkpoint_statement(head.seq, head.entry_hash, signed_at, self._signer.key_id)
        checkpoint = Checkpoint(
            seq=head.seq,
            entry_hash=head.entry_hash,
            signed_at=signed_at,
            key_id=self._signer.key_id,
            statement=statement,
            signature=self._signer.sign(statement),
        )
        store.add_checkpoint(checkpoint)
        # The log keeps a copy of every signed head outside the store (CT's gossip, in small):
        # truncating the store's tail and its checkpoints still leaves this line behind.
        log.info(
            "audit checkpoint seq=%d entry_hash=%s key_id=%s signature=%s",
            checkpoint.seq,
            checkpoint.entry_hash.hex(),
            checkpoint.key_id,
            checkpoint.signature.hex(),
        )
        return checkpoint

    def checkpoint_if_due(self, store: AuditStore) -> Checkpoint | None:
        """Sign the head when the oldest unsigned entry has waited ``checkpoint_after``."""
        first_unsigned = store.entry(self._signed_through(store) + 1)
        if first_unsigned is None:
            return None
        if self._clock() - first_unsigned.recorded_at < self._after:
            return None
        return self.checkpoint(store)

    def prune(self, store: AuditStore, retention: datetime.timedelta) -> int:
        """Prune entries whose action is older than ``retention``, through the last checkpoint
        before the first entry kept (module doc); returns how many entries went."""
        cutoff = self._clock() - retention
        first_kept = store.first_seq_since(cutoff)
        if first_kept is None:
            first_kept = store.head().seq + 1
        anchor = store.anchor()
        through = store.checkpoint_before(first_kept)
        if through is None or (anchor is not None and through.seq <= anchor.seq):
            return 0
        pruned = store.prune_through(through)
        log.info(
            "audit retention: pruned %d entries through seq %d (older than %s); the checkpoint"
            " at seq %d is the new anchor",
            pruned,
            through.seq,
            cutoff.isoformat(),
            through.seq,
        )
        return pruned

    @staticmethod
    def _signed_through(store: AuditStore) -> int:
        last = store.last_checkpoint()
        return last.seq if last is not None else 0


class Maintenance:
    """The audit service's background worker: time-triggered checkpoints and retention.

    ``run_once`` does one pass (each step in a transaction of its own) and returns how many
    checkpoints it wrote plus how many entries it pruned; ``run_forever`` loops it every
    ``poll_s`` until stopped. Retention runs at most every ``prune_every``. Thread safety: run it
    from one thread; it shares the database with the consumer through transactions.
    """

    def __init__(
        self,
        transaction: StoreTransaction,
        trail: AuditTrail,
        *,
        retention: datetime.timedelta | None = None,
        poll_s: float = 1.0,
        prune_every: datetime.timedelta = datetime.timedelta(hours=1),
        clock: Clock = timestamps.now,
    ) -> None:
        self._transaction = transaction
        self._trail = trail
        self._retention = retention
        self._poll_s = poll_s
        self._prune_every = prune_every
        self._clock = clock
        self._next_prune: datetime.datetime | None = None

    def run_once(self) -> int:
        """One pass: a checkpoint if one is due, then retention if it is due."""
        done = 0
        with self._transaction() as store:
            if self._trail.checkpoint_if_due(store) is not None:
                done += 1
        now = self._clock()
        if self._retention is not None and (self._next_prune is None or now >= self._next_prune):
            with self._transaction() as store:
                done += self._trail.prune(store, self._retention)
            self._next_prune = now + self._prune_every
        return done

    def run_forever(self, stop: threading.Event) -> None:
        """Loop ``run_once`` every ``poll_s`` until ``stop`` is set; an error is logged and the
        pass retried at the next tick (the store is unchanged by a failed transaction)."""
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                log.exception("audit maintenance failed; retrying in %.1f s", self._poll_s)
            stop.wait(self._poll_s)


DEFAULT_PAGE = 50
MAX_PAGE = 1000


class AuditQueries:
    """Searches the trail and lists the published keys. Thread safety: safe to share; each
    search reads one snapshot."""

    def __init__(self, snapshot: StoreTransaction, keys: Sequence[PublicKeyInfo]) -> None:
        self._snapshot = snapshot
        self._keys = tuple(keys)

    def search(self, query: EntryFilter) -> tuple[list[ChainEntry], int | None]:
        """The entries matching ``query`` (newest first, at most ``query.limit``; 0 means
        DEFAULT_PAGE, more than MAX_PAGE means MAX_PAGE) and the ``before_seq`` of the next
        page, None when this one is the last. InvalidArgument for a negative limit or an empty
        time range."""
        violations = Violations()
        violations.check(query.limit >= 0, "page_size", "must not be negative")
        if query.since is not None and query.until is not None:
            violations.check(query.since < query.until, "until", "must be after since")
        violations.raise_if_any()
        limit = DEFAULT_PAGE if query.limit == 0 else min(query.limit, MAX_PAGE)
        # One more than asked says whether another page follows, without a second query.
        probe = dataclasses.replace(query, limit=limit + 1)
        with self._snapshot() as store:
            found = list(store.search(probe))
        if len(found) > limit:
            return found[:limit], found[limit - 1].seq
        return found, None

    def public_keys(self) -> list[PublicKeyInfo]:
        """The checkpoint keys, the current one first."""
        return sorted(self._keys, key=lambda k: not k.current)
