"""Shipping's domain: pure Python, no IO, no grpc, no generated code."""
