"""The schema registry client every meshkit component builds from a URL setting.

``SCHEMA_REGISTRY_URL`` may list several registries, comma separated, as confluent-kafka's
``url`` does: its ``SchemaRegistryClient`` sends each request to them in order, moving on from
transport errors and from 408/429/5xx answers. On its own it starts every request at the first
URL, so with the first registry down each request would pay the failed connection (and, with
retries, their backoff) before the next answers. ``registry_client`` keeps the list's order but
asks the registry that last answered first.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: confluent-kafka's retriable statuses (``common.schema_registry_client.is_retriable``): a
#: registry that answers with one of these has not answered for this purpose.
_RETRIABLE = frozenset({408, 429, 500, 502, 503, 504})


def registry_urls(url: str) -> list[str]:
    """The URLs of a comma-separated list, in order, without blanks or trailing slashes."""
    return [u.strip().rstrip("/") for u in url.split(",") if u.strip()]


def registry_client(url: str, conf: Mapping[str, Any] | None = None) -> Any:
    """A ``SchemaRegistryClient`` for ``url`` (one URL or several, comma separated) and the
    other confluent-kafka settings in ``conf`` (e.g. ``timeout``, ``max.retries``). Thread-safe
    as confluent-kafka's client is; the registry asked first changes atomically."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    client = SchemaRegistryClient({**(conf or {}), "url": url})
    # confluent-kafka keeps the URL list on its (private) REST client and walks it per request;
    # tests/unit/meshkit/test_registry_urls.py pins that this still steers it.
    rest = client._rest_client
    configured = list(rest.base_urls)
    if len(configured) > 1:
        send = rest.send_http_request

        def send_and_remember(base_url: str, *args: Any, **kwargs: Any) -> Any:
            response = send(base_url, *args, **kwargs)
            if response.status_code not in _RETRIABLE and base_url in configured:
                # The list's order from the registry that answered: the others keep their turn.
                at = configured.index(base_url)
                rest.base_urls = configured[at:] + configured[:at]
            return response

        setattr(rest, "send_http_request", send_and_remember)  # noqa: B010 - an instance's own
    return client
