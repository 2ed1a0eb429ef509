"""``mesh experiments``: the experiments of the mesh, their analysis, and simulated traffic.

    mesh experiments ls [--json]                        the experiments namespace, one line each
    mesh experiments report KEY [--metric M] [--json]   per variant: units, conversions, rate,
                                                        difference [95 % CI], p-value; SRM check
    mesh experiments simulate KEY --units N --rates control=0.10,buy-now=0.12
                              [--skew [SHARE]] [--seed S] [--attributes JSON]

``report`` asks the control service's ExperimentService and prints a table, one line per
variant, then the sample-ratio-mismatch line: a loud ``WARNING`` when the units per variant do
not match the weights (chi-square p < 0.001), because then assignment or exposure logging is
broken and no other figure can be trusted. ``ls`` reads the ``experiments`` namespace from the
ConfigService. Both send ``--token``, else ``$MESH_TOKEN``, else a support token minted by the
mesh's identity (reading configuration and reports is support's, and admin's).

``simulate`` makes traffic for a running experiment: N synthetic units (``sim-<run>-<i>``),
each assigned by the real assignment (meshkit.control.experiments) of the definition the
control service holds, an ExperimentExposed for each unit in the experiment and a
ConversionRecorded (metric: the experiment's) with the probability ``--rates`` gives its
variant, published straight to experiments.events.v1 with the registry's serializer, as a
service's outbox would (through a throwaway outbox and the kit's relay). ``--skew`` drops a
share (default 0.2) of the last variant's exposures, the way a broken exposure log would, so
that the report's sample-ratio check fires. Kafka: ``--bootstrap``, else
``$MESH_KAFKA_BOOTSTRAP``, else the running mesh's; the registry: ``--registry``, else
``$SCHEMA_REGISTRY_URL``, else the mesh's schema-registry.

Exit codes: 0 done; 1 the service or Kafka did not answer; 2 usage (unknown experiment, bad
rates, nothing to talk to).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import grpc

from meshkit.addresses import AddressError, address_of, port_of
from meshkit.client import DEFAULT_TIMEOUT, connect
from meshkit.control.experiments import (
    EVENTS_NAMESPACE,
    EXPERIMENT_EVENTS,
    NAMESPACE,
    ConversionRecorded,
    Experiment,
    ExperimentExposed,
    assign_unit,
    parse_experiments,
    unit_of,
)

SERVICE = "control"
REGISTRY = "schema-registry"
ROLE = "support"  # the least role that reads configuration and experiment reports
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_SKEW = 0.2
BATCH = 1000  # units per outbox transaction, and between progress lines
PUBLISH_TIMEOUT_S = 60.0
SIMULATOR = "mesh-simulate"  # the events' service
SOURCE = f"/meshkit/{SIMULATOR}"


class UsageError(Exception):
    """What was asked cannot be done as asked (exit 2); the message says why."""


# ------------------------------------------------------------------------------ the services


def _metadata(token: str) -> tuple[tuple[str, str | bytes], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def fetch_report(target: str, key: str, *, metric: str = "", token: str = "") -> dict[str, Any]:
    """``target``'s GetExperimentReport for ``key`` as a JSON-ready dict (proto field names,
    every field); grpc.RpcError when it does not answer."""
    from google.protobuf import json_format

    from mesh.control.v1 import control_pb2, control_pb2_grpc

    with connect(target) as channel:
        response = control_pb2_grpc.ExperimentServiceStub(channel).GetExperimentReport(
            control_pb2.GetExperimentReportRequest(key=key, metric=metric),
            timeout=DEFAULT_TIMEOUT,
            metadata=_metadata(token),
        )
    report: dict[str, Any] = json_format.MessageToDict(
        response.report,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
    return report


def fetch_definitions(target: str, *, token: str = "") -> tuple[int, Mapping[str, Experiment]]:
    """The ``experiments`` namespace's current version and experiments, from ``target``'s
    ConfigService ((0, {}) when it has no document); grpc.RpcError when it does not answer."""
    from mesh.control.v1 import control_pb2, control_pb2_grpc

    with connect(target) as channel:
        try:
            response = control_pb2_grpc.ConfigServiceStub(channel).GetConfig(
                control_pb2.GetConfigRequest(namespace=NAMESPACE),
                timeout=DEFAULT_TIMEOUT,
                metadata=_metadata(token),
            )
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return 0, {}
            raise
    document = json.loads(response.config.document or "{}")
    return response.config.version, parse_experiments(document)


# ------------------------------------------------------------------------------ the table


def _percent(value: float) -> str:
    return f"{value * 100:.2f} %"


def _points(value: float) -> str:
    return f"{value * 100:+.2f} pp"


def _p(value: float) -> str:
    return f"{value:.4f}" if value >= 1e-4 else f"{value:.1e}"


def format_report(report: Mapping[str, Any]) -> str:
    """The lines ``mesh experiments report`` prints for a report (fetch_report's dict)."""
    metric = report["metric"] or "(none: no conversions counted)"
    lines = [f"experiment {report['key']}   metric {metric}   control {report['control']}"]
    if not report["definition"]:
        lines.append("(not defined any more: variants from the exposures, equal weights assumed)")
    header = (
        "VARIANT",
        "WEIGHT",
        "UNITS",
        "CONVERSIONS",
        "RATE",
        "DIFFERENCE [95 % CI]",
        "P-VALUE",
    )
    rows = [header]
    for v in report["variants"]:
        if v["variant"] == report["control"]:
            difference, p_value = "(control)", ""
        else:
            difference = (
                f"{_points(v['difference'])} [{_points(v['ci_low'])}, {_points(v['ci_high'])}]"
            )
            p_value = _p(v["p_value"])
        rows.append(
            (
                v["variant"],
                f"{v['weight']:.2f}",
                str(int(v["units"])),
                str(int(v["conversions"])),
                _percent(v["rate"]),
                difference,
                p_value,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]
    check = report["sample_ratio"]
    said = (
        f"chi-square {check['chi_square']:.2f} ({check['degrees_of_freedom']} df),"
        f" p = {_p(check['p_value'])}"
    )
    if check["mismatch"]:
        lines.append(
            f"WARNING: SAMPLE RATIO MISMATCH: {said} < 0.001: the units per variant do not match"
            " the weights. Assignment or exposure logging is broken; do not trust the figures"
            " above until it is found."
        )
    else:
        lines.append(f"sample ratio: {said}: the split matches the weights")
    return "\n".join(lines)


def format_definitions(version: int, experiments: Mapping[str, Experiment]) -> str:
    """The lines ``mesh experiments ls`` prints."""
    if not experiments:
        return f"no experiments (namespace {NAMESPACE!r} version {version})"
    rows = [("KEY", "STATUS", "VARIANTS", "COVERAGE", "METRIC", "AUDIENCE")]
    for key, exp in sorted(experiments.items()):
        rows.append(
            (
                key,
                exp.status,
                " ".join(f"{v.key}:{v.weight:g}" for v in exp.variants),
                f"{exp.coverage:g}",
                exp.metric or "-",
                "yes" if exp.audience is not None else "everyone",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"namespace {NAMESPACE!r} version {version}"]
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]
    return "\n".join(lines)


def _definition_json(exp: Experiment) -> dict[str, Any]:
    return {
        "key": exp.key,
        "status": exp.status,
        "variants": [{"key": v.key, "weight": v.weight} for v in exp.variants],
        "coverage": exp.coverage,
        "seed": exp.seed,
        "hashAttribute": exp.hash_attribute,
        "hashVersion": exp.hash_version,
        "audience": exp.audience,
        "metric": exp.metric,
    }


# ------------------------------------------------------------------------------ simulate


def parse_rates(text: str) -> dict[str, float]:
    """``control=0.10,buy-now=0.12`` as {variant: rate}; UsageError naming a bad one."""
    rates: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        name, sep, value = part.partition("=")
        try:
            rate = float(value)
        except ValueError:
            rate = math.nan
        if not sep or not name.strip() or not 0 <= rate <= 1:
            raise UsageError(f"--rates: {part!r} is not VARIANT=RATE with a rate from 0 to 1")
        rates[name.strip()] = rate
    if not rates:
        raise UsageError("--rates: give each variant's conversion rate, e.g. control=0.1,b=0.12")
    return rates


@dataclasses.dataclass(frozen=True)
class Simulation:
    """What ``simulate`` published: per variant, exposures published and dropped (``skew``)
    and conversions published; units outside the experiment; the run's unit prefix."""

    run: str
    units: int
    exposed: dict[str, int]
    dropped: dict[str, int]
    converted: dict[str, int]
    outside: int


def simulate(
    experiment: Experiment,
    *,
    units: int,
    rates: Mapping[str, float],
    bootstrap: str,
    registry: str,
    skew: float = 0.0,
    seed: int | None = None,
    attributes: Mapping[str, Any] | None = None,
    revision: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Simulation:
    """Publish the exposures and conversions of ``units`` synthetic units of ``experiment``
    (see the module doc) and wait until Kafka has them all. ``skew``: the share of the last
    variant's exposures dropped. UsageError for rates that name no variant of it;
    SchemaRegistrationError when the registry lacks the contracts; RuntimeError when Kafka
    does not take them within PUBLISH_TIMEOUT_S."""
    from meshkit.db import Database
    from meshkit.events import OUTBOX_MIGRATION, EventCatalog, Outbox, OutboxRelay, ensure_topics

    keys = [v.key for v in experiment.variants]
    unknown = sorted(set(rates) - set(keys))
    if unknown:
        raise UsageError(f"--rates: {unknown} are not variants of {experiment.key} ({keys})")
    say = progress or (lambda _line: None)
    rng = random.Random(seed)  # noqa: S311 - simulated traffic, not a secret
    run = uuid.UUID(int=rng.getrandbits(128)).hex[:8] if seed is not None else uuid.uuid4().hex[:8]
    tally = _Tally(dict.fromkeys(keys, 0), dict.fromkeys(keys, 0), dict.fromkeys(keys, 0))
    catalog = EventCatalog.from_package(EVENTS_NAMESPACE)
    outbox = Outbox(catalog, registry, source=SOURCE)
    outbox.verify()
    ensure_topics(bootstrap, catalog.topic_configs)
    with tempfile.TemporaryDirectory(prefix="mesh-simulate-") as folder:
        db = Database(Path(folder) / "outbox.db", [OUTBOX_MIGRATION], durable=False)
        relay = OutboxRelay(db, bootstrap, topics=catalog.topic_configs, lease_s=None)
        try:
            for start in range(0, units, BATCH):
                with db.transaction() as conn:
                    for i in range(start, min(start + BATCH, units)):
                        unit = _Unit(f"sim-{run}-{i}", attributes, rng)
                        for event in tally.events_of(experiment, unit, rates, skew, revision):
                            outbox.append(
                                conn,
                                EXPERIMENT_EVENTS.type_of(event),
                                EXPERIMENT_EVENTS.to_record(event),
                                key=EXPERIMENT_EVENTS.key_of(event),
                                event_id=event.event_id,
                                time=event.occurred_at,
                            )
                say(f"  ... {min(start + BATCH, units)}/{units} units assigned")
            _drain(relay, say)
        finally:
            relay.close()
            db.close()
    return Simulation(run, units, tally.exposed, tally.dropped, tally.converted, tally.outside)


@dataclasses.dataclass(frozen=True)
class _Unit:
    unit_id: str
    attributes: Mapping[str, Any] | None
    rng: random.Random


@dataclasses.dataclass
class _Tally:
    """What a simulation published so far, per variant."""

    exposed: dict[str, int]
    dropped: dict[str, int]
    converted: dict[str, int]
    outside: int = 0

    def events_of(
        self,
        experiment: Experiment,
        unit: _Unit,
        rates: Mapping[str, float],
        skew: float,
        revision: int,
    ) -> list[ExperimentExposed | ConversionRecorded]:
        """The events of one synthetic unit: none outside the experiment or when ``skew``
        drops its exposure (the last variant's only), else its exposure and maybe a
        conversion (a millisecond later: after the exposure, as a real one would be)."""
        variant = assign_unit(experiment, unit.unit_id, unit.attributes).variant
        if variant is None:
            self.outside += 1
            return []
        if variant == experiment.variants[-1].key and skew > 0 and unit.rng.random() < skew:
            self.dropped[variant] += 1
            return []
        hashed = unit_of(experiment, unit.unit_id, unit.attributes)
        at = datetime.datetime.now(datetime.UTC)
        events: list[ExperimentExposed | ConversionRecorded] = [
            ExperimentExposed(
                str(uuid.uuid4()), at, experiment.key, variant, hashed, SIMULATOR, revision
            )
        ]
        self.exposed[variant] += 1
        if experiment.metric and unit.rng.random() < rates.get(variant, 0.0):
            later = at + datetime.timedelta(milliseconds=1)
            events.append(
                ConversionRecorded(str(uuid.uuid4()), later, experiment.metric, hashed, SIMULATOR)
            )
            self.converted[variant] += 1
        return events


def _drain(relay: Any, say: Callable[[str], None]) -> None:
    """Run the relay until the outbox is empty (RuntimeError past PUBLISH_TIMEOUT_S)."""
    deadline = time.monotonic() + PUBLISH_TIMEOUT_S
    pending, _ = relay.lag()
    total = pending
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"Kafka took {total - pending} of {total} events in {PUBLISH_TIMEOUT_S:.0f} s"
            )
        relay.run_once()
        pending, _ = relay.lag()
        say(f"  ... {total - pending}/{total} events published")
    parked = relay.parked()
    if parked:
        raise RuntimeError(f"Kafka refused {len(parked)} events: {parked[0].error}")


# ------------------------------------------------------------------------------ the command


def _env(root: Path | None) -> dict[str, str] | None:
    return {**os.environ, "MESH_ROOT": str(root)} if root else None


def _target(args: argparse.Namespace, root: Path | None) -> str:
    if args.target:
        return str(args.target)
    try:
        return address_of(SERVICE, _env(root))
    except AddressError as exc:
        raise UsageError(f"{exc} (or pass --target HOST:PORT)") from None


def _registry(args: argparse.Namespace, root: Path | None) -> str:
    if args.registry:
        return str(args.registry)
    if os.environ.get("SCHEMA_REGISTRY_URL"):
        return os.environ["SCHEMA_REGISTRY_URL"]
    try:
        return f"http://127.0.0.1:{port_of(REGISTRY, _env(root))}"
    except AddressError as exc:
        raise UsageError(f"no schema registry: {exc} (or pass --registry URL)") from None


def _failed(command: str, target: str, error: grpc.RpcError) -> int:
    hint = ""
    if error.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        hint = f" (needs a {ROLE} or admin token: --token or $MESH_TOKEN)"
    elif error.code() == grpc.StatusCode.UNAVAILABLE:
        hint = " (is the mesh up? `mesh ps`)"
    print(
        f"mesh experiments {command}: {target}: {error.code().name}: {error.details()}{hint}",
        file=sys.stderr,
    )
    return EXIT_USAGE if error.code() == grpc.StatusCode.NOT_FOUND else EXIT_FAILED


def run(args: argparse.Namespace, root: Path | None = None) -> int:
    """Run ``mesh experiments ls|report|simulate``."""
    command = args.experiments_command
    from mesh_runner.cli import call_token

    try:
        target = _target(args, root)
        token = call_token(args.token, root, ROLE)
    except UsageError as exc:
        print(f"mesh experiments {command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        print(f"mesh experiments {command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        if command == "report":
            report = fetch_report(target, args.key, metric=args.metric or "", token=token)
            print(json.dumps(report, indent=2) if args.json else format_report(report))
            return EXIT_OK
        version, experiments = fetch_definitions(target, token=token)
        if command == "ls":
            if args.json:
                print(json.dumps([_definition_json(e) for e in experiments.values()], indent=2))
            else:
                print(format_definitions(version, experiments))
            return EXIT_OK
        return _run_simulate(args, root, version, experiments)
    except grpc.RpcError as error:
        return _failed(command, target, error)
    except UsageError as exc:
        print(f"mesh experiments {command}: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _run_simulate(
    args: argparse.Namespace,
    root: Path | None,
    version: int,
    experiments: Mapping[str, Experiment],
) -> int:
    from mesh_runner.cli import say
    from mesh_runner.config import ConfigError
    from mesh_runner.dlq import resolve_bootstrap

    experiment = experiments.get(args.key)
    if experiment is None:
        raise UsageError(
            f"no experiment {args.key!r} in namespace {NAMESPACE!r} (`mesh experiments ls`)"
        )
    if experiment.status != "running":
        raise UsageError(f"experiment {args.key!r} is {experiment.status}: it assigns nobody")
    if args.units < 1:
        raise UsageError("--units must be at least 1")
    if not 0 <= args.skew < 1:
        raise UsageError("--skew takes a share from 0 to 1 (exclusive)")
    rates = parse_rates(args.rates)
    try:
        attributes = json.loads(args.attributes) if args.attributes else None
    except ValueError as exc:
        raise UsageError(f"--attributes is not JSON: {exc}") from None
    try:
        bootstrap = resolve_bootstrap(args.bootstrap, root)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    registry = _registry(args, root)
    skewing = f", dropping {args.skew:.0%} of {experiment.variants[-1].key}'s exposures"
    say(
        f"simulating {args.units} units of {experiment.key} (version {version}) on {bootstrap}"
        + (skewing if args.skew else "")
    )
    try:
        result = simulate(
            experiment,
            units=args.units,
            rates=rates,
            bootstrap=bootstrap,
            registry=registry,
            skew=args.skew,
            seed=args.seed,
            attributes=attributes,
            revision=version,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - registry, Kafka: say which and stop
        print(f"mesh experiments simulate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    for key in result.exposed:
        line = f"{key}: {result.exposed[key]} exposures, {result.converted[key]} conversions"
        if result.dropped[key]:
            line += f", {result.dropped[key]} exposures dropped (--skew)"
        print(line)
    if result.outside:
        print(f"outside the experiment (coverage, audience): {result.outside} units")
    last = f"sim-{result.run}-{result.units - 1}"
    print(f"units sim-{result.run}-0 .. {last}; now: mesh experiments report {experiment.key}")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``experiments ls|report|simulate`` to the ``mesh`` parser."""
    from mesh_runner.cli import token_help

    experiments = sub.add_parser(
        "experiments",
        help="A/B experiments: list them, report on one (with the SRM check), simulate traffic",
        description="The experiments of the namespace 'experiments' and their analysis by the"
        " control service.",
    )
    commands = experiments.add_subparsers(
        dest="experiments_command", required=True, metavar="COMMAND"
    )
    ls = commands.add_parser("ls", help="the experiments defined now, one line each")
    ls.add_argument("--json", action="store_true", help="a JSON list, one object per experiment")
    report = commands.add_parser(
        "report",
        help="per variant: units, conversions, rate, difference [95 %% CI], p-value; the"
        " sample-ratio-mismatch check",
    )
    report.add_argument("key", metavar="KEY", help="the experiment's key")
    report.add_argument("--metric", help="the conversion metric (default: the experiment's own)")
    report.add_argument("--json", action="store_true", help="the report as JSON")
    simulate = commands.add_parser(
        "simulate",
        help="publish exposures and conversions of N synthetic units to experiments.events.v1",
        description="Each unit is assigned by the real assignment of the definition the control"
        " service holds; its exposure, and its conversion with its variant's rate, go straight"
        " to Kafka.",
    )
    simulate.add_argument("key", metavar="KEY", help="the experiment's key")
    simulate.add_argument("--units", type=int, required=True, help="how many synthetic units")
    simulate.add_argument(
        "--rates",
        required=True,
        metavar="VARIANT=RATE,...",
        help="each variant's conversion rate, e.g. control=0.10,buy-now=0.12 (missing: 0)",
    )
    simulate.add_argument(
        "--skew",
        type=float,
        nargs="?",
        const=DEFAULT_SKEW,
        default=0.0,
        metavar="SHARE",
        help=f"drop this share (default {DEFAULT_SKEW}) of the last variant's exposures, to see"
        " the sample-ratio check fire",
    )
    simulate.add_argument("--seed", type=int, help="a seed for repeatable conversions and units")
    simulate.add_argument(
        "--attributes", metavar="JSON", help="attributes of every unit, for the audience"
    )
    simulate.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap servers")
    simulate.add_argument("--registry", metavar="URL", help="the schema registry")
    for command in (ls, report, simulate):
        command.add_argument("--token", help=token_help(ROLE))
        command.add_argument(
            "--target",
            metavar="HOST:PORT",
            help=f"the control service (default: {SERVICE} in mesh.toml)",
        )
