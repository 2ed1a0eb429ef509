"""Control's adapters: SQLite storage, events."""
