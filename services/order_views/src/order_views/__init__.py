"""Order views: the CQRS read side, projections of the shop's events (shop.order_views.v1)."""
