"""Control's domain: pure Python, no I/O."""
