"""Audit's domain: the hash chain, canonical bytes and checkpoint statements. Pure Python."""
