"""The service level of a new shipment, from the feature flag ``checkout.express-shipping``.

The flag lives in the shop's flag set (the control plane's ``flags`` namespace, flagd's format:
proto/shop/config/flags.json) and is evaluated in this process through OpenFeature (``ctx.flags``,
meshkit's provider over the pushed flag set): no call per evaluation. Its unit (targeting key) is
the customer the shipment is booked for, so one customer gets one answer on every order; the
order id stands in when the caller acts for nobody. The destination's country is the
``country`` attribute its targeting reads.

Each evaluation is recorded on the current span (the CreateShipment RPC's) as the event
``feature_flag.evaluation`` with OpenTelemetry's feature-flag attributes (semantic conventions,
registry ``feature_flag.*``: key, provider name, result variant, value and reason, context id,
flag set id and version; ``error.type`` when the evaluation failed), which is how a trace shows
why a shipment went express.
"""

from __future__ import annotations

import logging
from typing import Any

from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason
from opentelemetry import trace

from meshkit.address import Address
from shipping.domain.model import ServiceLevel

EXPRESS_FLAG = "checkout.express-shipping"
EVALUATION_EVENT = "feature_flag.evaluation"

log = logging.getLogger(__name__)


class FlagServiceLevels:
    """ServiceLevels from the flag ``checkout.express-shipping`` (True: EXPRESS). Never raises:
    OpenFeature answers the default (False: STANDARD) for a missing flag, a missing targeting
    key or a provider that is not ready, with reason ERROR. Thread-safe (the client is)."""

    def __init__(self, client: OpenFeatureClient) -> None:
        self._client = client

    def level_for(self, *, order_id: str, customer_id: str, address: Address) -> ServiceLevel:
        """EXPRESS when the flag is on for ``customer_id`` (else ``order_id``) shipping to
        ``address``'s country."""
        context = EvaluationContext(
            customer_id or order_id,
            {"country": address.country_code, "orderId": order_id},
        )
        details = self._client.get_boolean_details(EXPRESS_FLAG, False, context)
        record_evaluation(details, context, self._client.provider.get_metadata().name)
        if details.reason == Reason.ERROR:
            log.warning(
                "flag %s for %s: %s (%s); shipping STANDARD",
                EXPRESS_FLAG,
                context.targeting_key,
                details.error_code,
                details.error_message,
            )
        return ServiceLevel.EXPRESS if details.value is True else ServiceLevel.STANDARD


def evaluation_attributes(
    details: FlagEvaluationDetails[Any], context: EvaluationContext, provider_name: str
) -> dict[str, str]:
    """The ``feature_flag.*`` attributes of one evaluation (OpenTelemetry semantic conventions;
    the reason in lower case, as its well-known values are)."""
    reason = str(details.reason or Reason.UNKNOWN).lower()
    attributes = {
        "feature_flag.key": details.flag_key,
        "feature_flag.provider.name": provider_name,
        "feature_flag.result.reason": reason,
        "feature_flag.result.value": str(details.value).lower()
        if isinstance(details.value, bool)
        else str(details.value),
    }
    if details.variant:
        attributes["feature_flag.result.variant"] = details.variant
    if context.targeting_key:
        attributes["feature_flag.context.id"] = context.targeting_key
    metadata = details.flag_metadata or {}
    for key, name in (("flagSetId", "feature_flag.set.id"), ("version", "feature_flag.version")):
        if key in metadata:
            attributes[name] = str(metadata[key])
    if details.reason == Reason.ERROR:
        attributes["error.type"] = str(details.error_code or "general").lower()
        if details.error_message:
            attributes["feature_flag.error.message"] = details.error_message
    return attributes


def record_evaluation(
    details: FlagEvaluationDetails[Any], context: EvaluationContext, provider_name: str
) -> None:
    """Add the evaluation to the current span as a ``feature_flag.evaluation`` event (nothing
    when no span records)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(EVALUATION_EVENT, evaluation_attributes(details, context, provider_name))
