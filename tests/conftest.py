"""Registers the shared fixture plugins in tests/support (importable via pythonpath = tests)."""

pytest_plugins = ["support.kafka", "support.mesh", "support.events", "support.tracing"]
