"""Payments: a simulated card processor (shop.payments.v1)."""
