"""``mesh audit``: verify the audit trail offline, and search it.

    mesh audit verify [--db PATH] [--public-key PEM] [--quiet]
    mesh audit ls [--actor S] [--action A] [--resource TYPE[:ID]] [--since ISO|1h|2d]
                  [--until ISO|1h|2d] [--limit N] [--json] [--token T] [--target HOST:PORT]

``verify`` reads the audit service's SQLite store directly, read-only (default
``.mesh/data/audit.db`` of the checkout, and the public keys in ``<db>.pub.pem`` beside it), and
needs neither the service nor this project's code of it: only the store's documented layout
(services/audit, adapters/sqlite.py) and the chain's rule (domain/chain.py):

- every entry: seq follows seq without a gap; SHA-256(prev_hash || canonical) is its entry_hash;
  its prev_hash is the entry_hash before it (32 zero bytes for seq 1, the anchor's after a
  retention prune); its search columns say what its canonical bytes say;
- every checkpoint: its Ed25519 signature over its statement, with the key its key_id names
  among the public keys given; the statement's seq, entry_hash, key_id and signed_at are the
  row's; the entry at that seq has that hash (a checkpoint past the end of the store means
  entries were removed from the end).

It stops at the FIRST bad entry and names it (seq and audit_id) and what is wrong: altered (its
content does not hash to its entry_hash, or a column disagrees with its content), removed (a seq
gap, or a chain that skips a missing entry), reordered (its prev_hash is the hash of a later
entry), inserted (an entry the chain goes around), or a checkpoint whose signature is invalid or
whose hash does not match. A clean store (an empty one too) prints ``verified N entries, M
checkpoints, up to seq S``, plus what is pruned and what is not signed yet.

What it cannot see: entries appended after the last checkpoint can be removed from the end with
no trace in the store (the service also logs every checkpoint, and keeping a copy of the latest
one elsewhere closes that gap, as CT's gossip does); and a verifier that takes its public key
from beside the store trusts whoever could write there: pass ``--public-key`` with the key
obtained out of band (``GetPublicKeys``, or the operator) to rule that out.

Exit codes: 0 verified; 1 not verified (the problem is named) or, for ``ls``, the service did
not answer; 2 usage (no store, no key for a signed store).

``ls`` asks the audit service (``mesh.audit.v1.AuditService/QueryAudit``), which needs the
auditor role (admins may not read the trail: separation of duties, see the audit service's
policy), and prints a table, newest first. The call carries ``--token``, else ``$MESH_TOKEN``,
else an auditor's token minted by the mesh's identity (what ``mesh token --role auditor``
prints).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from meshkit.addresses import AddressError, address_of
from meshkit.client import DEFAULT_TIMEOUT, connect

SERVICE = "audit"  # the audit service, by name in mesh.toml
ROLE = "auditor"  # the only role the audit service's policy lets read the trail (audit.read)
DEFAULT_DB = Path(".mesh/data/audit.db")
GENESIS = bytes(32)
CHECKPOINT_TYPE = "meshkit.audit.checkpoint.v1"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROGRESS_EVERY = 100_000
_PEM_BLOCK = re.compile(r"-----BEGIN PUBLIC KEY-----.*?-----END PUBLIC KEY-----", re.S)
_AGO = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


class UsageError(Exception):
    """The store or the keys cannot be read as asked (exit 2); the message says why."""


# ------------------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with the trail: the entry it names (``audit_id`` empty when the
    entry is gone), the kind (altered, removed, reordered, inserted, checkpoint) and why."""

    seq: int
    audit_id: str
    kind: str
    detail: str

    def __str__(self) -> str:
        named = f"seq {self.seq}" + (f" (audit_id {self.audit_id})" if self.audit_id else "")
        return f"{named}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class Report:
    """What ``verify_store`` found: counts, the chain's extent, and the first problem if any."""

    entries: int
    checkpoints: int
    last_seq: int
    anchor_seq: int
    signed_through: int
    problem: Problem | None

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return self.problem is None

    def summary(self) -> str:
        """The lines ``mesh audit verify`` prints for a verified store."""
        lines = [
            f"verified {self.entries} entries, {self.checkpoints} checkpoints,"
            f" up to seq {self.last_seq}"
        ]
        if self.anchor_seq:
            lines.append(
                f"entries up to seq {self.anchor_seq} were pruned by retention; the chain"
                f" continues from the signed checkpoint at seq {self.anchor_seq}"
            )
        unsigned = self.last_seq - max(self.signed_through, self.anchor_seq)
        if unsigned > 0:
            lines.append(
                f"{unsigned} entries after seq {max(self.signed_through, self.anchor_seq)} are"
                " chained but not signed yet (the next checkpoint will cover them)"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class _Checkpoint:
    seq: int
    entry_hash: bytes
    signed_at_micros: int
    key_id: str
    statement: bytes
    signature: bytes


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """The key id checkpoints name: hex of the first 8 bytes of SHA-256 of the raw key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:8].hex()


def load_public_keys(text: str) -> dict[str, Ed25519PublicKey]:
    """Every Ed25519 public key in PEM ``text``, by key id; UsageError for anything else."""
    keys: dict[str, Ed25519PublicKey] = {}
    for block in _PEM_BLOCK.findall(text):
        try:
            key = serialization.load_pem_public_key(block.encode())
        except ValueError as exc:
            raise UsageError(f"not a PEM public key: {exc}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise UsageError(f"not an Ed25519 public key: {type(key).__name__}")
        keys[key_id_of(key)] = key
    return keys


def _iso(micros: int) -> str:
    instant = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC) + datetime.timedelta(
        microseconds=micros
    )
    return instant.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _micros(iso: str) -> int:
    instant = datetime.datetime.fromisoformat(iso)
    delta = instant - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _open(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise UsageError(f"no audit store at {path}")
    # Read-only: verifying must never change what it verifies (nor create a missing file).
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        conn.execute("SELECT 1 FROM audit_entry LIMIT 1")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise UsageError(f"{path} is not an audit store: {exc}") from None
    return conn


class _Verifier:
    """One pass over one snapshot of a store (see the module doc)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        keys: Mapping[str, Ed25519PublicKey],
        progress: Callable[[int, int], None] | None,
        progress_every: int,
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._progress = progress
        self._progress_every = progress_every
        self._entries = 0
        self._checkpoints = 0
        self._anchor_seq = 0
        self._last_seq = 0
        self._signed_through = 0
        self._pending: Iterator[_Checkpoint] = iter(())
        self._checkpoint: _Checkpoint | None = None

    def run(self) -> Report:
        conn = self._conn
        anchor = conn.execute("SELECT seq, entry_hash FROM audit_anchor").fetchone()
        self._anchor_seq = int(anchor["seq"]) if anchor else 0
        self._last_seq = self._anchor_seq
        checkpoints = [
            _Checkpoint(
                int(r["seq"]),
                bytes(r["entry_hash"]),
                int(r["signed_at_micros"]),
                str(r["key_id"]),
                bytes(r["statement"]),
                bytes(r["signature"]),
            )
            for r in conn.execute(
                "SELECT seq, entry_hash, signed_at_micros, key_id, statement, signature"
                " FROM audit_checkpoint ORDER BY seq"
            )
        ]
        self._checkpoints = len(checkpoints)
        if checkpoints and not self._keys:
            raise UsageError(
                "the store has signed checkpoints but no public key was found to check them"
                " (pass --public-key PEM)"
            )
        self._pending = iter(checkpoints)
        self._checkpoint = next(self._pending, None)
        prev = bytes(anchor["entry_hash"]) if anchor else GENESIS
        problem = self._check_anchor(prev) or self._check_entries(prev) or self._check_tail()
        return Report(
            self._entries,
            self._checkpoints,
            self._last_seq,
            self._anchor_seq,
            self._signed_through,
            problem,
        )

    def _check_anchor(self, anchor_hash: bytes) -> Problem | None:
        """Checkpoints at or below the retention anchor (their entries are pruned): their
        signatures still count, and the one at the anchor must vouch for its hash."""
        anchor_seq = self._anchor_seq
        while self._checkpoint is not None and self._checkpoint.seq <= anchor_seq:
            checkpoint = self._checkpoint
            if problem := self._signature_problem(checkpoint):
                return problem
            if checkpoint.seq == anchor_seq and checkpoint.entry_hash == anchor_hash:
                self._signed_through = anchor_seq
            self._checkpoint = next(self._pending, None)
        if anchor_seq and self._signed_through != anchor_seq:
            return Problem(
                anchor_seq + 1,
                "",
                "removed",
                f"entries up to seq {anchor_seq} are gone but no checkpoint signed there"
                " vouches for the retention anchor",
            )
        return None

    def _check_entries(self, prev: bytes) -> Problem | None:
        """The chain, entry by entry, and each checkpoint at its entry."""
        expected_seq = self._anchor_seq + 1
        rows = self._conn.execute(
            "SELECT seq, audit_id, canonical, prev_hash, entry_hash, occurred_at_micros,"
            " service, action, outcome, actor_subject, on_behalf_of, resource_type, resource_id"
            " FROM audit_entry ORDER BY seq"
        )
        # A checkpoint mismatch is held back until the chain has been checked one entry past
        # it: an inserted entry shows in the chain there, which names it better.
        held: Problem | None = None
        for row in rows:
            seq = int(row["seq"])
            if held is not None and seq > held.seq + 1:
                return held
            problem = self._entry_problem(row, expected_seq, prev)
            if problem is not None:
                return held if held is not None and held.seq < problem.seq else problem
            if held is None:
                held = self._check_checkpoints_at(row)
            self._entries += 1
            self._last_seq = seq
            expected_seq = seq + 1
            prev = bytes(row["entry_hash"])
            if self._progress is not None and self._entries % self._progress_every == 0:
                self._progress(self._entries, seq)
        return held

    def _check_checkpoints_at(self, row: sqlite3.Row) -> Problem | None:
        seq = int(row["seq"])
        while self._checkpoint is not None and self._checkpoint.seq == seq:
            checkpoint = self._checkpoint
            problem = self._signature_problem(checkpoint) or self._checkpoint_mismatch(
                checkpoint, row
            )
            if problem is not None:
                return problem
            self._signed_through = seq
            self._checkpoint = next(self._pending, None)
        return None

    def _check_tail(self) -> Problem | None:
        """A checkpoint past the last entry: entries were removed from the end."""
        checkpoint = self._checkpoint
        if checkpoint is None:
            return None
        if problem := self._signature_problem(checkpoint):
            return problem
        last = self._last_seq
        return Problem(
            last + 1,
            "",
            "removed",
            f"a checkpoint signs seq {checkpoint.seq} but the store ends at seq {last}:"
            f" entries {last + 1} to {checkpoint.seq} were removed",
        )

    def _entry_problem(self, row: sqlite3.Row, expected_seq: int, prev: bytes) -> Problem | None:
        seq, audit_id = int(row["seq"]), str(row["audit_id"])
        if seq != expected_seq:
            missing = (
                f"seq {expected_seq}"
                if seq == expected_seq + 1
                else f"seq {expected_seq} to {seq - 1}"
            )
            return Problem(
                expected_seq,
                "",
                "removed",
                f"{missing} missing: the store goes from seq {expected_seq - 1} to seq {seq}"
                f" (audit_id {audit_id})",
            )
        canonical, stored_prev = bytes(row["canonical"]), bytes(row["prev_hash"])
        if hashlib.sha256(stored_prev + canonical).digest() != bytes(row["entry_hash"]):
            return Problem(seq, audit_id, "altered", "its content does not hash to its entry_hash")
        if stored_prev != prev:
            return self._chain_break(row, prev)
        return self._column_problem(row, canonical)

    def _chain_break(self, row: sqlite3.Row, prev: bytes) -> Problem:
        """Entry ``row`` does not follow the entry before it: which of removed, reordered or
        inserted explains it (found by where its prev_hash is in the store)."""
        seq, audit_id = int(row["seq"]), str(row["audit_id"])
        stored_prev = bytes(row["prev_hash"])
        follows = self._conn.execute(
            "SELECT seq FROM audit_entry WHERE entry_hash = ? ORDER BY seq LIMIT 1",
            (stored_prev,),
        ).fetchone()
        after = int(follows["seq"]) if follows is not None else None
        if after is None and self._anchor_seq and stored_prev == self._anchor_hash():
            after = self._anchor_seq
        if after is not None and after >= seq:
            return Problem(
                seq,
                audit_id,
                "reordered",
                f"its prev_hash is the hash of seq {after}, which comes after it",
            )
        if after is not None:
            first = self._conn.execute(
                "SELECT audit_id FROM audit_entry WHERE seq = ?", (after + 1,)
            ).fetchone()
            span = f"seq {after + 1}" if after + 1 == seq - 1 else f"seq {after + 1} to {seq - 1}"
            return Problem(
                after + 1,
                str(first["audit_id"]) if first else "",
                "inserted",
                f"the chain goes from seq {after} to seq {seq} around {span}",
            )
        nxt = self._conn.execute(
            "SELECT prev_hash FROM audit_entry WHERE seq = ?", (seq + 1,)
        ).fetchone()
        if nxt is not None and bytes(nxt["prev_hash"]) == prev:
            return Problem(
                seq,
                audit_id,
                "inserted",
                f"the chain goes from seq {seq - 1} to seq {seq + 1} around it",
            )
        return Problem(
            seq,
            audit_id,
            "removed",
            f"the entry before it in the chain is missing (its prev_hash matches no entry; seq"
            f" {seq - 1} is not it)",
        )

    def _anchor_hash(self) -> bytes:
        row = self._conn.execute("SELECT entry_hash FROM audit_anchor").fetchone()
        return bytes(row["entry_hash"]) if row else b""

    @staticmethod
    def _column_problem(row: sqlite3.Row, canonical: bytes) -> Problem | None:
        seq, audit_id = int(row["seq"]), str(row["audit_id"])
        try:
            record = json.loads(canonical)
            actor = record.get("actor") or {}
            says = {
                "audit_id": record.get("audit_id", ""),
                "occurred_at_micros": _micros(record["occurred_at"]),
                "service": record.get("service", ""),
                "action": record.get("action", ""),
                "outcome": record.get("outcome", ""),
                "actor_subject": actor.get("subject", ""),
                "on_behalf_of": actor.get("on_behalf_of", ""),
                "resource_type": record.get("resource_type", ""),
                "resource_id": record.get("resource_id", ""),
            }
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            return Problem(seq, audit_id, "altered", f"its content is not a record: {exc}")
        for column, value in says.items():
            if row[column] != value:
                return Problem(
                    seq,
                    audit_id,
                    "altered",
                    f"its {column} column says {row[column]!r} but its content says {value!r}",
                )
        return None

    def _signature_problem(self, checkpoint: _Checkpoint) -> Problem | None:
        where = f"the checkpoint at seq {checkpoint.seq}"
        key = self._keys.get(checkpoint.key_id)
        if key is None:
            return Problem(
                checkpoint.seq,
                "",
                "checkpoint",
                f"{where} names key {checkpoint.key_id}, not among the public keys given",
            )
        try:
            key.verify(checkpoint.signature, checkpoint.statement)
        except InvalidSignature:
            return Problem(checkpoint.seq, "", "checkpoint", f"{where}: signature invalid")
        try:
            statement = json.loads(checkpoint.statement)
            agrees = statement == {
                "entry_hash": checkpoint.entry_hash.hex(),
                "key_id": checkpoint.key_id,
                "seq": checkpoint.seq,
                "signed_at": _iso(checkpoint.signed_at_micros),
                "type": CHECKPOINT_TYPE,
            }
        except ValueError:
            agrees = False
        if not agrees:
            return Problem(
                checkpoint.seq,
                "",
                "checkpoint",
                f"{where}: its columns do not match the statement it signs",
            )
        return None

    @staticmethod
    def _checkpoint_mismatch(checkpoint: _Checkpoint, row: sqlite3.Row) -> Problem | None:
        if checkpoint.entry_hash == bytes(row["entry_hash"]):
            return None
        return Problem(
            checkpoint.seq,
            str(row["audit_id"]),
            "altered",
            f"the checkpoint signed at seq {checkpoint.seq} holds hash"
            f" {checkpoint.entry_hash.hex()[:16]}..., the store's entry"
            f" {bytes(row['entry_hash']).hex()[:16]}...: entries up to it were altered and"
            " the chain recomputed",
        )


def verify_store(
    db_path: Path,
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    progress: Callable[[int, int], None] | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> Report:
    """Verify the store at ``db_path`` against ``public_keys`` (by key id), in one read-only
    snapshot; ``progress(entries, seq)`` is called every ``progress_every`` entries. UsageError
    when it is not a store, or it has checkpoints and no key was given."""
    conn = _open(db_path)
    try:
        conn.execute("BEGIN")
        try:
            return _Verifier(conn, public_keys, progress, progress_every).run()
        finally:
            conn.execute("COMMIT")
    finally:
        conn.close()


def public_key_file(db_path: Path) -> Path:
    """Where the service publishes the keys of the store at ``db_path``: ``<db>.pub.pem``."""
    return db_path.with_name(db_path.name + ".pub.pem")


def _default_db(root: Path | None) -> Path:
    from mesh_runner.config import ConfigError, find_root

    try:
        return (root or find_root()) / DEFAULT_DB
    except ConfigError:
        return DEFAULT_DB


def run_verify(args: argparse.Namespace, root: Path | None) -> int:
    """``mesh audit verify``."""
    db = args.db or _default_db(root)
    key_file = args.public_key or public_key_file(db)
    try:
        keys = load_public_keys(key_file.read_text()) if key_file.is_file() else {}
        if args.public_key and not keys:
            raise UsageError(f"{key_file}: no Ed25519 public key in it")

        def progress(entries: int, seq: int) -> None:
            if not args.quiet:
                print(f"  ... {entries} entries checked (seq {seq})", file=sys.stderr, flush=True)

        report = verify_store(db, keys, progress=progress)
    except UsageError as exc:
        print(f"mesh audit verify: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if report.problem is not None:
        print(f"mesh audit verify: {db}: NOT verified: {report.problem}")
        print(f"  ({report.entries} entries before it verified)")
        return EXIT_FAILED
    print(report.summary())
    return EXIT_OK


# ----------------------------------------------------------------------------------------- ls


def parse_when(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """``1h``, ``30m``, ``2d``, ``1w``, ``45s`` (that long ago), or an ISO-8601 date or time
    (UTC unless it says otherwise); ValueError otherwise."""
    now = now or datetime.datetime.now(datetime.UTC)
    ago = _AGO.fullmatch(text.strip())
    if ago:
        return now - datetime.timedelta(seconds=int(ago.group(1)) * _UNITS[ago.group(2)])
    try:
        instant = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r}: expected 1h, 2d, ... or an ISO-8601 time") from None
    return instant if instant.tzinfo else instant.replace(tzinfo=datetime.UTC)


def query_audit(
    target: str,
    *,
    token: str = "",
    actor: str = "",
    action: str = "",
    resource: str = "",
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Up to ``limit`` entries ``target``'s QueryAudit finds (paging as needed), newest first,
    as JSON-ready dicts; grpc.RpcError when it does not answer. ``resource`` is ``TYPE`` or
    ``TYPE:ID``."""
    from google.protobuf import json_format

    from mesh.audit.v1 import audit_pb2, audit_pb2_grpc

    resource_type, _, resource_id = resource.partition(":")
    metadata: tuple[tuple[str, str | bytes], ...] = (
        (("authorization", f"Bearer {token}"),) if token else ()
    )
    request = audit_pb2.QueryAuditRequest(
        actor=actor, action=action, resource_type=resource_type, resource_id=resource_id
    )
    if since is not None:
        request.since.FromDatetime(since)
    if until is not None:
        request.until.FromDatetime(until)
    found: list[dict[str, Any]] = []
    with connect(target) as channel:
        stub = audit_pb2_grpc.AuditServiceStub(channel)
        while len(found) < limit:
            request.page_size = min(limit - len(found), 1000)
            response = stub.QueryAudit(request, timeout=DEFAULT_TIMEOUT, metadata=metadata)
            found += [
                json_format.MessageToDict(
                    entry,
                    preserving_proto_field_name=True,
                    always_print_fields_with_no_presence=True,
                )
                for entry in response.entries
            ]
            if not response.next_page_token:
                break
            request.page_token = response.next_page_token
    return found[:limit]


def _table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no audit entries match"
    header = ("SEQ", "OCCURRED (UTC)", "SERVICE", "ACTION", "OUTCOME", "ACTOR", "RESOURCE")
    lines = []
    for row in rows:
        record = row["record"]
        actor = record["actor"]
        who = actor["subject"] or "-"
        if actor["on_behalf_of"]:
            who += f" for {actor['on_behalf_of']}"
        resource = record["resource_type"]
        if record["resource_id"]:
            resource += f":{record['resource_id']}"
        outcome = record["outcome"]
        if record["reason"]:
            outcome += f" ({record['reason']})"
        occurred = str(record.get("occurred_time", "")).replace("T", " ").rstrip("Z")[:23]
        lines.append(
            (
                str(row["seq"]),
                occurred,
                record["service"],
                record["action"],
                outcome,
                who,
                resource or "-",
            )
        )
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in [header, *lines]
    )


def run_ls(args: argparse.Namespace, root: Path | None) -> int:
    """``mesh audit ls``."""
    target = args.target
    if target is None:
        env = {**os.environ, "MESH_ROOT": str(root)} if root else None
        try:
            target = address_of(SERVICE, env)
        except AddressError as exc:
            print(f"mesh audit ls: {exc} (or pass --target HOST:PORT)", file=sys.stderr)
            return EXIT_USAGE
    try:
        since = parse_when(args.since) if args.since else None
        until = parse_when(args.until) if args.until else None
    except ValueError as exc:
        print(f"mesh audit ls: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from mesh_runner.cli import call_token

    try:
        token = call_token(args.token, root, ROLE)
    except RuntimeError as exc:
        print(f"mesh audit ls: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        rows = query_audit(
            target,
            token=token,
            actor=args.actor or "",
            action=args.action or "",
            resource=args.resource or "",
            since=since,
            until=until,
            limit=args.limit,
        )
    except grpc.RpcError as error:
        hint = ""
        if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            hint = f" (QueryAudit needs an {ROLE}'s token: --token or $MESH_TOKEN)"
        elif error.code() == grpc.StatusCode.UNAVAILABLE:
            hint = " (is the mesh up? `mesh ps`)"
        print(
            f"mesh audit ls: {target}: {error.code().name}: {error.details()}{hint}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    print(json.dumps(rows, indent=2) if args.json else _table(rows))
    return EXIT_OK


# ------------------------------------------------------------------------------------ parsers


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``audit verify`` and ``audit ls`` to the ``mesh`` parser."""
    audit = sub.add_parser(
        "audit",
        help="verify the audit trail offline (hash chain, signed checkpoints), or search it",
        description="The audit trail: `verify` checks the audit service's store offline and"
        " names the first entry altered, removed, reordered or inserted; `ls` searches it.",
    )
    commands = audit.add_subparsers(dest="audit_command", required=True, metavar="COMMAND")
    verify = commands.add_parser(
        "verify",
        help="recompute the hash chain and every checkpoint signature of the store",
        description="Reads the store read-only. Exit 0: verified; 1: not verified (the first"
        " bad entry is named); 2: no store, or no public key for a signed store.",
    )
    verify.add_argument(
        "--db", type=Path, help=f"the audit store (default: {DEFAULT_DB} of the checkout)"
    )
    verify.add_argument(
        "--public-key",
        type=Path,
        metavar="PEM",
        help="a PEM file of the trusted Ed25519 public key(s), got out of band"
        " (default: <db>.pub.pem, as the service published them)",
    )
    verify.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    ls = commands.add_parser(
        "ls",
        help="search the trail (QueryAudit over gRPC; an auditor's token), newest first",
        description="Searches the trail through the audit service; every filter given must"
        " match. Needs a token with the auditor role (not admin: separation of duties):"
        " --token, else $MESH_TOKEN, else one minted by the mesh's identity.",
    )
    ls.add_argument("--actor", help="the acting user or service (or the user it acted for)")
    ls.add_argument("--action", help="the action, e.g. orders.place; 'orders.*' for a prefix")
    ls.add_argument("--resource", metavar="TYPE[:ID]", help="e.g. Order or Order:<order id>")
    ls.add_argument("--since", metavar="ISO|1h|2d", help="actions at or after this time")
    ls.add_argument("--until", metavar="ISO|1h|2d", help="actions before this time")
    ls.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    ls.add_argument("--json", action="store_true", help="a JSON list, one object per entry")
    # Imported here: cli imports this module to build its parser.
    from mesh_runner.cli import token_help

    ls.add_argument("--token", help=token_help(ROLE))
    ls.add_argument(
        "--target", metavar="HOST:PORT", help=f"the audit service (default: {SERVICE} in mesh.toml)"
    )


def run(args: argparse.Namespace, root: Path | None = None) -> int:
    """Run ``mesh audit verify|ls``."""
    if args.audit_command == "verify":
        return run_verify(args, root)
    return run_ls(args, root)
