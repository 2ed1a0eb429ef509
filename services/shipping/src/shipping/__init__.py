"""Shipping: books and cancels shipments (shop.shipping.v1)."""
