"""Orders: the event-sourced order aggregate and its saga (shop.orders.v1)."""
