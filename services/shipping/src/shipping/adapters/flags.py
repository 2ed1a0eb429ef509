"""The service level of a new shipment, from the feature flag ``checkout.express-shipping``.

The flag lives in the shop's flag set (the control plane's ``flags`` namespace, flagd's format:
proto/shop/config/flags.json) and is evaluated in this process through OpenFeature (``ctx.flags``,
meshkit's provider over the pushed flag set): no call per evaluation. Its unit (targeting key) is
the customer the shipment is booked for, so one customer gets one answer on every order; the
order id stands in when the caller acts for nobody. The destination's country is the
``country`` attribute its targeting reads.

Each evaluation shows on the current span (the CreateShipment RPC's) as the event
``feature_flag.evaluation`` with OpenTelemetry's feature-flag attributes (key, provider name,
variant, reason, flag set id and version; ``error.type`` when it failed): meshkit's provider
records it, so a trace shows why a shipment went express.
"""

from __future__ import annotations

import logging

from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import Reason

from meshkit.address import Address
from shipping.domain.model import ServiceLevel

EXPRESS_FLAG = "checkout.express-shipping"

log = logging.getLogger(__name__)


class FlagServiceLevels:
    """ServiceLevels from the flag ``checkout.express-shipping`` (True: EXPRESS). Never raises:
    OpenFeature answers the default (False: STANDARD) for a missing flag, a missing targeting
    key or a provider that is not ready, with reason ERROR, logged at WARNING the first time
    each error code is met (then DEBUG: a control outage would otherwise log every shipment).
    Thread-safe (the client is)."""

    def __init__(self, client: OpenFeatureClient) -> None:
        self._client = client
        self._warned: set[str] = set()

    def level_for(self, *, order_id: str, customer_id: str, address: Address) -> ServiceLevel:
        """EXPRESS when the flag is on for ``customer_id`` (else ``order_id``) shipping to
        ``address``'s country."""
        context = EvaluationContext(
            customer_id or order_id,
            {"country": address.country_code, "orderId": order_id},
        )
        details = self._client.get_boolean_details(EXPRESS_FLAG, False, context)
        if details.reason == Reason.ERROR:
            code = str(details.error_code)
            level = logging.DEBUG if code in self._warned else logging.WARNING
            self._warned.add(code)
            log.log(
                level,
                "flag %s for %s: %s (%s); shipping STANDARD",
                EXPRESS_FLAG,
                context.targeting_key,
                details.error_code,
                details.error_message,
            )
        return ServiceLevel.EXPRESS if details.value is True else ServiceLevel.STANDARD
