"""The `mesh` local runner."""
