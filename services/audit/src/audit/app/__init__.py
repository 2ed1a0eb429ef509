"""Audit's use cases (append, checkpoint, prune, search) and the ports they need."""
