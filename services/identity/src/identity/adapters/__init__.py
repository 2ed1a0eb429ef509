"""Identity's adapters: SQLite storage, events."""
