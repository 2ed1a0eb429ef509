"""``mesh audit verify`` against tampered stores: each kind of tampering an auditor cares about
fails verification naming the FIRST bad entry (seq and audit_id) and what is wrong, and a clean
store verifies. The tampering is done as someone with the file would: triggers dropped first."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from unit.audit.trails import Trail, make_trail, record, tamper

from audit.adapters.signing import public_key_file
from audit.domain.chain import canonical_bytes, checkpoint_statement
from mesh_runner.audit import Problem, UsageError, load_public_keys, verify_store
from meshkit import timestamps

ENTRIES = 12
EVERY = 5


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[Trail]:
    made = make_trail(tmp_path, every=EVERY)
    made.fill(ENTRIES)  # checkpoints at 5 and 10; 11-12 unsigned
    yield made
    made.db.close()


def audit_id(n: int) -> str:
    return str(record(n)["audit_id"])


def problem(trail: Trail) -> Problem:
    report = trail.verify()
    assert report.problem is not None, "tampering went unnoticed"
    return report.problem


def test_a_clean_store_verifies(trail: Trail) -> None:
    report = trail.verify()
    assert report.ok, report.problem
    assert report.summary().splitlines()[0] == "verified 12 entries, 2 checkpoints, up to seq 12"


def test_an_empty_store_verifies(tmp_path: Path) -> None:
    empty = make_trail(tmp_path)
    try:
        report = empty.verify()
        assert report.ok
        assert report.summary() == "verified 0 entries, 0 checkpoints, up to seq 0"
    finally:
        empty.db.close()


def test_one_byte_edited_in_one_entry_is_named(trail: Trail) -> None:
    tamper(
        trail.path,
        "UPDATE audit_entry SET canonical = CAST(replace(CAST(canonical AS TEXT),"
        " 'order-7', 'order-8') AS BLOB) WHERE seq = 7",
    )
    found = problem(trail)
    assert (found.seq, found.audit_id, found.kind) == (7, audit_id(7), "altered")
    assert "does not hash" in str(found)


def test_an_edited_search_column_is_named(trail: Trail) -> None:
    tamper(trail.path, "UPDATE audit_entry SET actor_subject = 'someone-else' WHERE seq = 3")
    found = problem(trail)
    assert (found.seq, found.audit_id, found.kind) == (3, audit_id(3), "altered")
    assert "actor_subject column says 'someone-else'" in found.detail


def test_a_deleted_entry_is_named(trail: Trail) -> None:
    tamper(trail.path, "DELETE FROM audit_entry WHERE seq = 4")
    found = problem(trail)
    assert (found.seq, found.kind) == (4, "removed")
    assert "seq 4 missing" in found.detail


def test_a_deleted_entry_with_the_rest_renumbered_is_named(trail: Trail) -> None:
    tamper(
        trail.path,
        "DELETE FROM audit_entry WHERE seq = 4",
        "UPDATE audit_entry SET seq = -seq WHERE seq > 4",
        "UPDATE audit_entry SET seq = -seq - 1 WHERE seq < 0",
    )
    found = problem(trail)
    # Seq 4 now holds what was entry 5: the chain breaks there, an entry before it is missing.
    assert (found.seq, found.audit_id, found.kind) == (4, audit_id(5), "removed")


def test_two_swapped_entries_are_named(trail: Trail) -> None:
    tamper(
        trail.path,
        "UPDATE audit_entry SET seq = -1 WHERE seq = 6",
        "UPDATE audit_entry SET seq = 6 WHERE seq = 8",
        "UPDATE audit_entry SET seq = 8 WHERE seq = -1",
    )
    found = problem(trail)
    assert (found.seq, found.audit_id, found.kind) == (6, audit_id(8), "reordered")


def test_two_swapped_neighbours_are_named(trail: Trail) -> None:
    tamper(
        trail.path,
        "UPDATE audit_entry SET seq = -1 WHERE seq = 2",
        "UPDATE audit_entry SET seq = 2 WHERE seq = 3",
        "UPDATE audit_entry SET seq = 3 WHERE seq = -1",
    )
    found = problem(trail)
    assert (found.seq, found.audit_id, found.kind) == (2, audit_id(3), "reordered")


def forge(trail: Trail, at: int, prev_seq: int) -> str:
    """A forged entry at ``at``, made as well as one can without the key: it chains correctly
    from entry ``prev_seq`` (so its own hash checks out); the entries from ``at`` on move up."""
    [prev] = trail.rows("SELECT entry_hash FROM audit_entry WHERE seq = ?", prev_seq)
    forged = record(1000, action="inventory.stock.set", resource_type="Sku")
    canonical = canonical_bytes(forged)
    digest = hashlib.sha256(bytes(prev["entry_hash"]) + canonical).digest()
    tamper(
        trail.path,
        ("UPDATE audit_entry SET seq = -seq - 1 WHERE seq >= ?", (at,)),
        "UPDATE audit_entry SET seq = -seq WHERE seq < 0",
        (
            "INSERT INTO audit_entry VALUES (?, ?, ?, ?, ?, 0, ?, 'orders', 'inventory.stock.set',"
            " 'SUCCESS', ?, '', 'Sku', ?)",
            (
                at,
                forged["audit_id"],
                canonical,
                bytes(prev["entry_hash"]),
                digest,
                timestamps.to_micros(forged["occurred_at"]),
                forged["actor"]["subject"],
                forged["resource_id"],
            ),
        ),
    )
    return str(forged["audit_id"])


def test_an_inserted_entry_is_named(trail: Trail) -> None:
    forged = forge(trail, at=7, prev_seq=6)
    found = problem(trail)
    assert (found.seq, found.audit_id, found.kind) == (7, forged, "inserted")


def test_an_entry_inserted_at_a_checkpoint_is_named(trail: Trail) -> None:
    # The checkpoint at seq 5 now sits on the forged entry; the chain still names it.
    forged = forge(trail, at=5, prev_seq=4)
    found = problem(trail)
    assert (found.seq, found.audit_id, found.kind) == (5, forged, "inserted")


def test_a_recomputed_chain_is_caught_by_the_signed_checkpoint(trail: Trail) -> None:
    # Edit entry 3 and recompute every hash after it: the chain is consistent again, but the
    # checkpoint at seq 5 signed the old hash.
    rows = trail.rows("SELECT seq, canonical FROM audit_entry ORDER BY seq")
    prev = bytes(32)
    statements: list[str | tuple[str, tuple[object, ...]]] = []
    for row in rows:
        canonical = bytes(row["canonical"])
        if row["seq"] == 3:
            canonical = canonical.replace(b"SKU-1", b"SKU-9")
        digest = hashlib.sha256(prev + canonical).digest()
        statements.append(
            (
                "UPDATE audit_entry SET canonical = ?, prev_hash = ?, entry_hash = ? WHERE seq = ?",
                (canonical, prev, digest, row["seq"]),
            )
        )
        prev = digest
    tamper(trail.path, *statements)
    found = problem(trail)
    assert (found.seq, found.audit_id, found.kind) == (5, audit_id(5), "altered")
    assert "chain recomputed" in found.detail


def test_a_forged_checkpoint_signature_is_named(trail: Trail) -> None:
    tamper(trail.path, "UPDATE audit_checkpoint SET signature = zeroblob(64) WHERE seq = 10")
    found = problem(trail)
    assert (found.seq, found.kind) == (10, "checkpoint")
    assert "signature invalid" in found.detail


def test_a_checkpoint_signed_with_another_key_is_named(trail: Trail) -> None:
    # A complete forgery: a new key, the statement re-signed, and the new key published beside
    # the store. Only a trusted key, got out of band, tells.
    trusted = trail.keys()
    attacker = Ed25519PrivateKey.generate()
    raw = attacker.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    kid = hashlib.sha256(raw).hexdigest()[:16]
    [row] = trail.rows("SELECT entry_hash, signed_at_micros FROM audit_checkpoint WHERE seq = 10")
    signed_at = timestamps.from_micros(row["signed_at_micros"])
    statement = checkpoint_statement(10, bytes(row["entry_hash"]), signed_at, kid)
    tamper(
        trail.path,
        (
            "UPDATE audit_checkpoint SET key_id = ?, statement = ?, signature = ? WHERE seq = 10",
            (kid, statement, attacker.sign(statement)),
        ),
    )
    public_key_file(trail.path).write_bytes(
        attacker.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    found = verify_store(trail.path, trusted).problem
    assert found is not None
    assert (found.seq, found.kind) == (10, "checkpoint")
    assert f"names key {kid}, not among the public keys given" in found.detail


def test_entries_removed_from_the_end_are_caught_up_to_the_last_checkpoint(trail: Trail) -> None:
    tamper(trail.path, "DELETE FROM audit_entry WHERE seq >= 9")
    found = problem(trail)
    assert (found.seq, found.kind) == (9, "removed")
    assert "checkpoint signs seq 10 but the store ends at seq 8" in found.detail


def test_the_first_problem_is_named_when_there_are_several(trail: Trail) -> None:
    tamper(
        trail.path,
        "DELETE FROM audit_entry WHERE seq = 9",
        "UPDATE audit_entry SET actor_subject = 'x' WHERE seq = 2",
    )
    assert problem(trail).seq == 2


def test_a_signed_store_without_a_public_key_is_a_usage_error(trail: Trail) -> None:
    with pytest.raises(UsageError, match="no public key"):
        verify_store(trail.path, {})
    with pytest.raises(UsageError, match="no audit store"):
        verify_store(trail.path.with_name("missing.db"), trail.keys())


def test_progress_is_reported_on_long_stores(trail: Trail) -> None:
    seen: list[tuple[int, int]] = []
    report = verify_store(
        trail.path, trail.keys(), progress=lambda n, s: seen.append((n, s)), progress_every=5
    )
    assert report.ok
    assert seen == [(5, 5), (10, 10)]


def copy_store(trail: Trail, target: Path) -> Path:
    """A consistent copy of the store file (SQLite's backup API) and its public key."""
    target.mkdir()
    copy = target / "audit.db"
    source = sqlite3.connect(trail.path)
    dest = sqlite3.connect(copy)
    with dest:
        source.backup(dest)
    source.close()
    dest.close()
    shutil.copy(public_key_file(trail.path), public_key_file(copy))
    return copy


def mesh(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "mesh"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_verifies_a_clean_copy_and_names_the_entry_in_a_tampered_one(
    trail: Trail, tmp_path: Path
) -> None:
    clean = copy_store(trail, tmp_path / "clean")
    ok = mesh("audit", "verify", "--db", str(clean))
    assert ok.returncode == 0, ok.stderr
    assert "verified 12 entries, 2 checkpoints, up to seq 12" in ok.stdout

    tampered = copy_store(trail, tmp_path / "tampered")
    tamper(
        tampered,
        "UPDATE audit_entry SET canonical = CAST(replace(CAST(canonical AS TEXT), 'SKU-1',"
        " 'SKU-2') AS BLOB) WHERE seq = 8",
    )
    trusted = public_key_file(clean)
    bad = mesh("audit", "verify", "--db", str(tampered), "--public-key", str(trusted))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert f"NOT verified: seq 8 (audit_id {audit_id(8)}): altered" in bad.stdout

    missing = mesh("audit", "verify", "--db", str(tmp_path / "none.db"))
    assert missing.returncode == 2
    assert "no audit store" in missing.stderr


def test_the_public_key_file_holds_what_verify_needs(trail: Trail) -> None:
    keys = load_public_keys(public_key_file(trail.path).read_text())
    assert list(keys) == [trail.signer.key_id]
