"""``mesh token``: an access token minted by the mesh's identity, for local development.

    mesh token [--role customer|support|admin|auditor] [--subject ID] [--ttl SECONDS]
    grpcurl -H "authorization: Bearer $(mesh token --role admin)" ...

Runs ``python -m identity.admin token`` in the environment ``mesh up`` gives identity (its
mesh.toml, its component settings, the registry), in the checkout, so it signs with the very key
the running identity publishes in its JWKS, and writes the minting to identity's audit trail.
Only the token goes to stdout; anything else goes to stderr.

Exit codes: 0 printed a token, 1 it could not (identity's database missing: run mesh up first),
2 usage error.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from mesh_runner.config import ConfigError, load_mesh, resolve_command
from mesh_runner.kafka import KafkaChoice

IDENTITY = "identity"  # the component of mesh.toml that mints tokens
ROLES = ("customer", "support", "admin", "auditor")
DEFAULT_TTL = 3600
TIMEOUT_S = 60.0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``token`` to the ``mesh`` parser."""
    token = sub.add_parser(
        "token",
        help="print an access token minted by identity, for local development",
        description="Print an access token signed by the mesh's identity (its current key, its"
        " issuer and audience; client_id mesh-cli), for local calls:"
        ' grpcurl -H "authorization: Bearer $(mesh token --role admin)" ...'
        " Identity's database must exist: run mesh up first. Each token minted is audited.",
    )
    token.add_argument(
        "--role", choices=ROLES, default="customer", help="the token's role (default customer)"
    )
    token.add_argument(
        "--subject",
        metavar="ID",
        help="its sub: a user id, or an account's email (default dev-<role>)",
    )
    token.add_argument(
        "--ttl",
        metavar="SECONDS",
        type=_positive,
        default=DEFAULT_TTL,
        help=f"lifetime in seconds (default {DEFAULT_TTL})",
    )


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1 second")
    return value


def mint(root: Path | None, role: str, subject: str = "", ttl: int = DEFAULT_TTL) -> str:
    """The token identity's admin command mints in the mesh of ``root`` (default: found from the
    working directory). RuntimeError with identity's own words when it cannot; ConfigError
    when there is no mesh.toml or no identity in it."""
    # Imported here: cli imports this module to register the command.
    from mesh_runner.cli import component_env

    mesh = load_mesh(root)
    component = mesh.component(IDENTITY)
    # The Kafka the mesh last ran with; minting reads nothing from Kafka, so with none recorded
    # any value does (component_env wants one to build identity's environment).
    choice = KafkaChoice.load(mesh.run_dir) or KafkaChoice("none", "127.0.0.1:9092", False)
    argv = [
        *resolve_command(("python", "-m", "identity.admin")),
        "token",
        "--role",
        role,
        "--ttl",
        str(ttl),
    ]
    if subject:
        argv += ["--subject", subject]
    result = subprocess.run(
        argv,
        cwd=mesh.root,
        env=component_env(mesh, choice, component),
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    if result.returncode != 0:
        said = result.stderr.strip().removeprefix("identity.admin: ")
        raise RuntimeError(said or f"identity.admin token failed (exit {result.returncode})")
    # Warnings (a key about to rotate) are identity's to say, on stderr; the token is stdout's.
    if result.stderr.strip():
        print(result.stderr.strip(), file=sys.stderr)
    return result.stdout.strip()


def run(args: argparse.Namespace, root: Path | None) -> int:
    """``mesh token``: print the token alone on stdout."""
    try:
        token = mint(root, args.role, args.subject or "", args.ttl)
    except (ConfigError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"mesh token: {exc}", file=sys.stderr)
        return 1
    print(token)
    return 0
