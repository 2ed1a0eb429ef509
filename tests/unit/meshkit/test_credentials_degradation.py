"""A service's own token while identity is unreachable (issue 15, graceful degradation): the
cached token is used for as long as it is valid, renewals are retried at a measured pace, and
only an expired token makes the call fail."""

from __future__ import annotations

import pytest

from meshkit.credentials import REFRESH_BEFORE_S, RENEW_RETRY_S, ServiceCredentials
from meshkit.errors import Unavailable

from ...support.tokens import token_endpoint


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_cached_token_outlives_an_identity_outage_until_it_expires() -> None:
    clock = Clock()
    with token_endpoint(ttl=600) as identity:
        credentials = ServiceCredentials(
            f"{identity.url}/token", "orders", "dev-orders-secret", clock=clock, timeout=1.0
        )
        first = credentials.token()
        assert identity.issued == ["orders"]
    # identity is gone now; the token has 600 s to live, and is due for renewal at 540 s
    clock.now += 600 - REFRESH_BEFORE_S + 1
    assert credentials.token() == first  # renewal failed: the still-valid token is used
    clock.now += RENEW_RETRY_S / 2
    assert credentials.token() == first  # and identity is not asked again at once
    clock.now += RENEW_RETRY_S
    assert credentials.token() == first  # asked again, failed again, still valid
    clock.now += REFRESH_BEFORE_S  # expired
    with pytest.raises(Unavailable, match="cannot get orders's access token"):
        credentials.token()


def test_a_token_is_renewed_before_it_expires_when_identity_answers() -> None:
    clock = Clock()
    with token_endpoint(ttl=600) as identity:
        credentials = ServiceCredentials(
            f"{identity.url}/token", "orders", "dev-orders-secret", clock=clock
        )
        credentials.token()
        clock.now += 600 - REFRESH_BEFORE_S + 1
        credentials.token()
        assert identity.issued == ["orders", "orders"]
