"""Audit's adapters: the SQLite store and the Ed25519 signing key."""
