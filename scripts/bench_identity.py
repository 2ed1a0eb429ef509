"""Identity's access tokens: how fast they are signed and verified, against bare joserfc.

Every call the gateway and the services check will carry one of these tokens, so verification is
on the hot path of the whole mesh. This measures ``SigningKeys.verify`` (header checks, the
published-key lookup in its SQLite store, the ES256 signature, the RFC 9068 claims) and
``issue_access_token`` on one thread, each against the same ES256 operation done with joserfc
directly on the same key in the same run: the ratio is what identity's checks cost on top of the
cryptography. Nothing passes or fails on a number.

    .venv/bin/python scripts/bench_identity.py [--seconds 2]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchlib import record
from joserfc import jwt
from joserfc.jwk import ECKey

from identity.adapters.keys import SigningKeys, SqliteKeyStore
from identity.adapters.sqlite import MIGRATIONS
from meshkit.db import Database

ISSUER = "http://127.0.0.1:8090"


def rate(call: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``call`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(50):
        call()
    count, began = 0, time.perf_counter()
    deadline = began + seconds
    while True:
        for _ in range(50):
            call()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - began)


def main() -> int:
    """Measure and record identity.verify and identity.issue."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        db = Database(Path(scratch) / "identity.db", MIGRATIONS)
        keys = SigningKeys(SqliteKeyStore(db), issuer=ISSUER)
        token, claims = keys.issue_access_token(
            sub="u1", aud="meshkit", client_id="shop-web", scope="orders", roles=["customer"]
        )
        stored = next(k for k in SqliteKeyStore(db).all_keys() if k.kid == keys.active_kid())
        private = ECKey.import_key(json.loads(stored.private_jwk))
        header = {"alg": "ES256", "typ": "at+jwt", "kid": keys.active_kid()}

        verify = rate(lambda: keys.verify(token, audience="meshkit"), args.seconds)
        bare_verify = rate(lambda: jwt.decode(token, private, algorithms=["ES256"]), args.seconds)
        issue = rate(
            lambda: keys.issue_access_token(
                sub="u1", aud="meshkit", client_id="shop-web", scope="orders", roles=["customer"]
            ),
            args.seconds,
        )
        bare_issue = rate(
            lambda: jwt.encode(header, claims, private, algorithms=["ES256"]), args.seconds
        )
        db.close()
    for name, value, baseline, what in (
        ("identity.verify", verify, bare_verify, "joserfc.jwt.decode, ES256, same key"),
        ("identity.issue", issue, bare_issue, "joserfc.jwt.encode, ES256, same key"),
    ):
        record(name, value, "tokens/s", baseline=baseline, baseline_name=what)
        print(
            f"  {name:<17} {value:>9,.0f} tokens/s   bare joserfc {baseline:>9,.0f}/s"
            f"   ratio {value / baseline:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
