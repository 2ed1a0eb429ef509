"""The composition root: shipping's use cases and servicer, on the service kit."""

from __future__ import annotations

from meshkit.server import ServiceBinding
from meshkit.service import Service, ServiceContext, binding
from shipping.adapters.events import EVENTS
from shipping.adapters.flags import FlagServiceLevels
from shipping.adapters.sqlite import MIGRATIONS, SqliteUnitOfWork
from shipping.app.shipping import Shipping
from shipping.config import Settings
from shipping.entrypoints.grpc_api import ShippingServiceServicer
from shop.shipping.v1 import shipping_pb2_grpc


def build(ctx: ServiceContext[Settings]) -> list[ServiceBinding]:
    """Shipping's servicer over its use cases, each call one unit of work on ``ctx.db``; the
    destinations it refuses come from SHIPPING_UNSERVED_COUNTRIES; a new shipment's service
    level from the feature flag checkout.express-shipping (``ctx.flags``, evaluated here)."""
    shipping = Shipping(
        lambda: SqliteUnitOfWork(ctx.db, ctx.events),
        unserved_countries=ctx.settings.unserved_country_codes,
        service_levels=FlagServiceLevels(ctx.flags),
    )
    servicer = ShippingServiceServicer(shipping)
    return [binding(servicer, shipping_pb2_grpc.add_ShippingServiceServicer_to_server)]


SERVICE = Service[Settings](
    "shipping", build, settings=Settings, migrations=MIGRATIONS, events=EVENTS
)
