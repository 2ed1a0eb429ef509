"""``mesh dlq``: look at and replay the dead letters of a topic.

    mesh dlq ls TOPIC [--json] [--bootstrap HOST:PORT]   what is in TOPIC.dlq, and why
    mesh dlq replay TOPIC [--bootstrap HOST:PORT]        send them back to TOPIC, each once

Kafka: --bootstrap, else $MESH_KAFKA_BOOTSTRAP, else the Kafka the running mesh recorded
(.mesh/run/kafka-choice.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mesh_runner.config import ConfigError, find_root
from mesh_runner.kafka import KafkaChoice
from meshkit.errors import MeshError


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``dlq ls`` and ``dlq replay`` to the ``mesh`` parser."""
    dlq = sub.add_parser(
        "dlq",
        help="list or replay the dead letters of a topic (TOPIC.dlq)",
        description="Dead letters are records a consumer could not decode or handle; they keep"
        " their original key, bytes and headers plus dlq_* headers naming the error.",
    )
    actions = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    ls = actions.add_parser("ls", help="show the dead letters of TOPIC (reads, commits nothing)")
    ls.add_argument("topic", metavar="TOPIC", help="the original topic, e.g. orders.events.v1")
    ls.add_argument("--json", action="store_true", help="a JSON list, one object per letter")
    replay = actions.add_parser(
        "replay",
        help="send TOPIC's dead letters not replayed yet back to TOPIC (once each)",
        description="Replays in one Kafka transaction with the progress of the consumer group"
        " mesh-dlq-replay on TOPIC.dlq, so a repeated replay sends nothing twice.",
    )
    replay.add_argument("topic", metavar="TOPIC", help="the original topic")
    for action in (ls, replay):
        action.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers")


def resolve_bootstrap(flag: str | None, root: Path | None) -> str:
    """--bootstrap, else $MESH_KAFKA_BOOTSTRAP, else the running mesh's recorded Kafka."""
    if flag:
        return flag
    if os.environ.get("MESH_KAFKA_BOOTSTRAP"):
        return os.environ["MESH_KAFKA_BOOTSTRAP"]
    try:
        mesh_root = root or find_root()
    except ConfigError:
        mesh_root = None
    choice = KafkaChoice.load(mesh_root / ".mesh" / "run") if mesh_root else None
    if choice is None:
        raise ConfigError(
            "no Kafka to talk to: pass --bootstrap HOST:PORT, set MESH_KAFKA_BOOTSTRAP,"
            " or start the mesh (`mesh up`)"
        )
    return choice.bootstrap


def run(args: argparse.Namespace, root: Path | None) -> int:
    """Run ``mesh dlq ...``; ConfigError (exit 2) when no Kafka is known."""
    from meshkit.events import read_dead_letters, replay_dead_letters

    bootstrap = resolve_bootstrap(args.bootstrap, root)
    try:
        if args.dlq_command == "ls":
            rows = [letter.summary() for letter in read_dead_letters(bootstrap, args.topic)]
            if args.json:
                print(json.dumps(rows, indent=2))
            else:
                _print_table(args.topic, rows)
            return 0
        count = replay_dead_letters(bootstrap, args.topic)
        print(f"replayed {count} dead letter(s) to {args.topic}")
        return 0
    except MeshError as exc:
        print(f"mesh dlq: {exc}", file=sys.stderr)
        return 1


def _print_table(topic: str, rows: list[dict[str, object]]) -> None:
    if not rows:
        print(f"no dead letters for {topic}")
        return
    print(f"{'SOURCE':<12}{'KEY':<20}{'CE_TYPE':<40}{'CE_ID':<38}{'TIME':<29}ERROR")
    for row in rows:
        source = f"{row['partition']}@{row['offset']}"
        print(
            f"{source:<12}{_cut(row['key'], 19):<20}{_cut(row['ce_type'], 39):<40}"
            f"{_cut(row['ce_id'], 37):<38}{_cut(row['time'], 28):<29}"
            f"{row['error_type']}: {row['error']}"
        )


def _cut(value: object, width: int) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= width else text[: width - 1] + "…"
