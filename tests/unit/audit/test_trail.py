"""The trail on its real SQLite store: exactly-once appends, checkpoints by count and by time,
retention through an anchor, the append-only guards, the signing key and its publication."""

from __future__ import annotations

import datetime
import json
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from unit.audit.trails import Trail, make_trail, record

from audit.adapters.signing import (
    Ed25519Signer,
    SigningKeyError,
    load_signer,
    public_key_file,
    publish,
)
from audit.adapters.sqlite import transactions


@pytest.fixture
def trail(tmp_path: Path) -> Iterator[Trail]:
    made = make_trail(tmp_path, every=5)
    yield made
    made.db.close()


def test_records_chain_in_order_and_verify(trail: Trail) -> None:
    entries = trail.append(record(1), record(2), record(3))
    assert [e.seq for e in entries if e] == [1, 2, 3]
    rows = trail.rows("SELECT seq, prev_hash, entry_hash FROM audit_entry ORDER BY seq")
    assert bytes(rows[0]["prev_hash"]) == bytes(32)
    assert bytes(rows[1]["prev_hash"]) == bytes(rows[0]["entry_hash"])
    report = trail.verify()
    assert report.ok, report.problem
    assert (report.entries, report.last_seq) == (3, 3)


def test_a_redelivered_record_is_not_appended_twice(trail: Trail) -> None:
    trail.append(record(1), record(2))
    # The same audit_ids again, in a batch and alone: a redelivery after a crash, or a replay.
    assert trail.append(record(2), record(1)) == [None, None]
    assert trail.append(record(1)) == [None]
    assert trail.rows("SELECT COUNT(*) AS n FROM audit_entry")[0]["n"] == 2
    assert trail.verify().ok


def test_the_store_refuses_a_second_entry_with_the_same_audit_id(trail: Trail) -> None:
    [entry] = trail.append(record(1))
    assert entry is not None
    with pytest.raises(sqlite3.IntegrityError), trail.db.transaction() as conn:
        conn.execute(
            "INSERT INTO audit_entry SELECT seq + 1, audit_id, canonical, prev_hash, entry_hash,"
            " recorded_at_micros, occurred_at_micros, service, action, outcome, actor_subject,"
            " on_behalf_of, resource_type, resource_id FROM audit_entry"
        )


def test_a_checkpoint_is_signed_every_n_entries(trail: Trail) -> None:
    trail.fill(12)
    seqs = [r["seq"] for r in trail.rows("SELECT seq FROM audit_checkpoint ORDER BY seq")]
    assert seqs == [5, 10]
    report = trail.verify()
    assert report.ok, report.problem
    assert (report.checkpoints, report.signed_through) == (2, 10)
    assert "2 entries after seq 10 are chained but not signed yet" in report.summary()


def test_a_checkpoint_is_signed_once_the_oldest_unsigned_entry_waited_long_enough(
    trail: Trail,
) -> None:
    trail.fill(2)
    assert trail.maintenance.run_once() == 0  # not due yet
    trail.clock.advance(seconds=9.9)
    assert trail.maintenance.run_once() == 0
    trail.clock.advance(seconds=0.1)
    assert trail.maintenance.run_once() == 1
    # Nothing new: no checkpoint, however long it waits.
    trail.clock.advance(seconds=60)
    assert trail.maintenance.run_once() == 0
    rows = trail.rows("SELECT seq, statement FROM audit_checkpoint")
    assert [r["seq"] for r in rows] == [2]
    statement = json.loads(rows[0]["statement"])
    assert statement["signed_at"] == "2026-01-02T03:04:15.678901Z"
    assert statement["key_id"] == trail.signer.key_id


def test_checkpointing_an_unchanged_head_writes_nothing(trail: Trail) -> None:
    assert trail.checkpoint() is None  # empty
    trail.fill(1)
    assert trail.checkpoint() is not None
    assert trail.checkpoint() is None


def test_the_maintenance_worker_stops_when_told(trail: Trail) -> None:
    import threading

    stop = threading.Event()
    stop.set()
    trail.maintenance.run_forever(stop)  # returns at once: stop is set


def test_entries_are_append_only(trail: Trail) -> None:
    trail.fill(3)
    trail.checkpoint()
    refused = [
        "UPDATE audit_entry SET action = 'x' WHERE seq = 2",
        "DELETE FROM audit_entry WHERE seq = 2",
        "UPDATE audit_checkpoint SET seq = 2",
        "DELETE FROM audit_checkpoint",
        "INSERT INTO audit_entry SELECT 9, 'other', canonical, prev_hash, entry_hash,"
        " recorded_at_micros, occurred_at_micros, service, action, outcome, actor_subject,"
        " on_behalf_of, resource_type, resource_id FROM audit_entry WHERE seq = 1",
    ]
    for sql in refused:
        with pytest.raises(sqlite3.IntegrityError), trail.db.transaction() as conn:
            conn.execute(sql)
    assert trail.verify().ok


def test_retention_prunes_through_a_checkpoint_and_the_rest_still_verifies(
    tmp_path: Path,
) -> None:
    trail = make_trail(tmp_path, every=4, retention=datetime.timedelta(days=30))
    try:
        trail.fill(15)  # occurred at T0 + n seconds; checkpoints at 4, 8, 12
        later = trail.clock.now + datetime.timedelta(days=40)
        trail.append(*(record(n, occurred_at=later) for n in range(16, 19)))  # checkpoint at 16
        trail.clock.advance(days=50)  # the cutoff is T0 + 20 days: entries 1-15 are old
        with transactions(trail.db)() as store:
            pruned = trail.trail.prune(store, datetime.timedelta(days=30))
        # Through the last checkpoint before the first entry kept (16): through 12. Entries
        # 13-15 are old too, but stay until a checkpoint after them can be the anchor.
        assert pruned == 12
        seqs = [r["seq"] for r in trail.rows("SELECT seq FROM audit_entry ORDER BY seq")]
        assert seqs == list(range(13, 19))
        signed = [r["seq"] for r in trail.rows("SELECT seq FROM audit_checkpoint ORDER BY seq")]
        assert signed == [12, 16]
        report = trail.verify()
        assert report.ok, report.problem
        assert (report.entries, report.anchor_seq, report.last_seq) == (6, 12, 18)
        assert "entries up to seq 12 were pruned by retention" in report.summary()
        # The chain goes on from there, and verifies again.
        trail.append(record(99))
        assert trail.rows("SELECT MAX(seq) AS s FROM audit_entry")[0]["s"] == 19
        assert trail.verify().ok
    finally:
        trail.db.close()


def test_the_worker_prunes_at_most_hourly(tmp_path: Path) -> None:
    trail = make_trail(tmp_path, every=2, retention=datetime.timedelta(days=1))
    try:
        trail.fill(4)  # checkpoints at 2 and 4
        trail.clock.advance(days=2)
        assert trail.maintenance.run_once() == 4
        trail.fill(2, start=5)  # old records too (occurred at T0 + n s); checkpoint at 6
        trail.clock.advance(minutes=30)
        assert trail.maintenance.run_once() == 0
        trail.clock.advance(minutes=31)
        assert trail.maintenance.run_once() == 2
        assert trail.verify().ok
    finally:
        trail.db.close()


def test_retention_never_prunes_an_entry_newer_than_the_cutoff(tmp_path: Path) -> None:
    trail = make_trail(tmp_path, every=2, retention=datetime.timedelta(days=1))
    try:
        trail.fill(4)  # checkpoints at 2 and 4, all recent
        assert trail.maintenance.run_once() == 0
        trail.clock.advance(days=2)
        assert trail.maintenance.run_once() == 4  # everything old, pruned through seq 4
        assert trail.rows("SELECT COUNT(*) AS n FROM audit_entry")[0]["n"] == 0
        report = trail.verify()
        assert report.ok, report.problem
        assert (report.entries, report.last_seq, report.anchor_seq) == (0, 4, 4)
        trail.append(record(5))
        assert trail.verify().ok
    finally:
        trail.db.close()


def test_pruning_below_the_anchor_is_refused_by_the_store(tmp_path: Path) -> None:
    trail = make_trail(tmp_path, every=2, retention=datetime.timedelta(days=1))
    try:
        trail.fill(3)
        with pytest.raises(sqlite3.IntegrityError), trail.db.transaction() as conn:
            conn.execute("DELETE FROM audit_entry WHERE seq = 1")  # no anchor yet
        trail.clock.advance(days=2)
        trail.maintenance.run_once()
        with pytest.raises(sqlite3.IntegrityError), trail.db.transaction() as conn:
            conn.execute("UPDATE audit_anchor SET seq = 0")
    finally:
        trail.db.close()


def test_the_head_survives_a_restart(tmp_path: Path) -> None:
    first = make_trail(tmp_path, every=3)
    first.fill(4)
    first.db.close()
    again = make_trail(tmp_path, every=3)
    try:
        assert again.signer.key_id == first.signer.key_id  # the development key is kept
        assert again.append(record(4)) == [None]
        again.fill(2, start=5)
        assert again.rows("SELECT MAX(seq) AS s FROM audit_entry")[0]["s"] == 6
        report = again.verify()
        assert report.ok, report.problem
        assert report.checkpoints == 2
    finally:
        again.db.close()


def test_a_record_that_cannot_be_an_entry_is_refused_and_stores_nothing(trail: Trail) -> None:
    with pytest.raises(ValueError, match="audit_id"):
        trail.append(record(1, audit_id=""))
    with pytest.raises(ValueError, match="canonical"):
        trail.append(record(2, details={"amount": 1.5}))
    assert trail.rows("SELECT COUNT(*) AS n FROM audit_entry")[0]["n"] == 0


def test_the_development_key_is_private_and_the_public_key_published(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "data" / "audit.db"
    signer = load_signer("", db)
    key_file = db.with_name("audit.db.signing-key.pem")
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    assert "AUDIT_SIGNING_KEY" in caplog.text
    keys = publish(db, signer)
    assert [(k.key_id, k.current) for k in keys] == [(signer.key_id, True)]
    assert public_key_file(db).read_text() == signer.public_key_pem
    assert load_signer("", db).key_id == signer.key_id  # made once
    assert not list(db.parent.glob("*.tmp"))  # written whole elsewhere, then linked in place


def test_a_configured_key_is_used_and_rotation_keeps_the_old_public_key(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    old = load_signer("", db)
    publish(db, old)
    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    path = tmp_path / "signing.pem"
    path.write_text(pem)
    new = load_signer(pem, db)
    assert load_signer(str(path), db).key_id == new.key_id
    keys = publish(db, new)
    assert [(k.key_id, k.current) for k in keys] == [(new.key_id, True), (old.key_id, False)]


def test_a_bad_signing_key_setting_is_named(tmp_path: Path) -> None:
    with pytest.raises(SigningKeyError, match="AUDIT_SIGNING_KEY"):
        Ed25519Signer.from_setting(str(tmp_path / "missing.pem"))
    with pytest.raises(SigningKeyError, match="not a PEM private key"):
        Ed25519Signer.from_setting("-----BEGIN PRIVATE KEY-----\nnope\n-----END PRIVATE KEY-----")


def test_a_batch_that_fails_leaves_no_entry_behind(trail: Trail) -> None:
    with pytest.raises(ValueError), transactions(trail.db)() as store:
        trail.trail.append(store, record(1))
        trail.trail.append(store, record(2, audit_id=""))
    assert trail.rows("SELECT COUNT(*) AS n FROM audit_entry")[0]["n"] == 0
