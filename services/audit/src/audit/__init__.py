"""Audit: the mesh's tamper-evident audit trail (mesh.audit.v1).

It consumes every ``mesh.audit.v1.AuditRecorded`` from audit.events.v1 exactly once into an
append-only, SHA-256 hash-chained store in its SQLite database, signs a checkpoint of the chain
(Ed25519) every AUDIT_CHECKPOINT_EVERY entries or AUDIT_CHECKPOINT_SECONDS, publishes the public
key beside the database (<db>.pub.pem) and over GetPublicKeys, prunes by AUDIT_RETENTION_DAYS
through a checkpoint, and answers QueryAudit for auditors. `mesh audit verify` checks the store
offline; `mesh audit ls` searches it.
"""
