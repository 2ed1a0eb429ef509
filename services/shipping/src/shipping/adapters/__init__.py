"""Shipping's adapters: SQLite storage and the mapping of domain events to Avro records."""
