"""Identity's domain: pure Python, no I/O."""
