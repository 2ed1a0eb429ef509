"""The service kit: one way to declare, build and run a service of the mesh.

A service is one ``Service`` value in its ``bootstrap.py``::

    SERVICE = Service("inventory", build, migrations=MIGRATIONS, events=EVENTS)

where ``build(ctx)`` returns the servicers it serves, ``MIGRATIONS`` is its SQLite schema (with
OUTBOX_MIGRATION when it publishes) and ``EVENTS`` the EventMap of what it publishes (or None);
``--help`` describes it with its package's docstring. Its ``__main__.py`` is
``sys.exit(SERVICE.main())``. The kit does the rest, the same way for every service:

- settings from ``<NAME>_*`` variables (``Settings``, a ``ServiceSettings`` subclass); the port
  defaults to the service's port in mesh.toml (``meshkit.addresses``), the database to
  ``.mesh/data/<name>.db``; ``--help`` lists them all;
- when it publishes: its event contracts from the installed contracts package, checked against the
  registry at start (a schema not registered as-is refuses the start, naming the subjects), an
  outbox and the outbox relay (a worker thread), creating its topics;
- when it reads (``consumes=("shop.orders.v1", ...)``): those contracts as reader schemas, checked
  against the registry at start, and consumers of their topics (``ctx.consume(handlers)``: inbox
  dedup in its database, offsets committed after; or ``ctx.consumers(handlers)`` for its own);
- its SQLite database, migrated;
- channels to its peers by name (``ctx.connect("inventory")``), closed on stop; their calls carry
  the caller's token forwarded, or the service's own (meshkit.credentials);
- a permission check before every RPC (meshkit.authz): identity's tokens verified against its
  JWKS, the contract's declared permission asked of the service's ``policy.cedar``, owners of
  resources from ``ctx.authz.owners`` (a resolver per resource field), every denial audited;
- audit records (``uow.publish(AuditEntry(...))``, meshkit.audit) through its outbox, or,
  for a service that publishes no events of its own, through an outbox of the kit's beside its
  database (``<name>.audit-outbox.db``);
- live configuration (``ctx.config("orders", parse=..., default=...)``, meshkit.control): a
  namespace's document pushed by the control service, validated by the service's own parse
  (a version it rejects is NACKed and the previous stays), its last known good kept in
  ``<db dir>/<name>.config/`` and served while the control service is down;
- experiments (``ctx.experiments.assign(key, unit_id)``, meshkit.control.experiments): the
  ``experiments`` namespace live, each unit's first exposure written as an event (and
  conversions: ``uow.publish(ctx.experiments.conversion(...))``) through its outbox, or the
  kit's (``<name>.audit-outbox.db``; ``<name>.kit-outbox.db`` for a service without a database);
- feature flags through OpenFeature (``ctx.flags.get_boolean_value(key, default, context)``,
  meshkit.control.flags): the ``flags`` namespace, a flagd flag set, evaluated in process by
  flagd's evaluator behind one provider per process (also ``openfeature.api.get_client()``);
- an HTTP side when it needs one (``ctx.serve_http(wsgi_app)``, on its ``http_port`` from
  mesh.toml unless ``<NAME>_HTTP_PORT`` says otherwise; see meshkit.http);
- the gRPC server with health, reflection, error mapping, tracing and a graceful stop that drains
  RPCs, stops the workers, then closes channels and the database, in that order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import grpc
from grpc_health.v1 import health_pb2
from openfeature import api as openfeature_api
from openfeature.exception import ProviderNotReadyError

from meshkit import authz, resilience
from meshkit.addresses import AddressError, address_of, env_key, http_port_of, http_url_of, port_of
from meshkit.audit import AUDIT_NAMESPACE, DENIED, Actor, AuditEntry, AuditTrail
from meshkit.client import connect
from meshkit.control.config import LiveConfig
from meshkit.control.experiments import (
    EVENTS_NAMESPACE as EXPERIMENTS_NAMESPACE,
)
from meshkit.control.experiments import (
    EXPERIMENT_EVENTS,
    Experiments,
    parse_experiments,
    with_experiment_events,
)
from meshkit.control.experiments import NAMESPACE as EXPERIMENTS_CONFIG
from meshkit.control.flags import EMPTY_FLAG_SET, MeshFlagProvider, parse_flag_set
from meshkit.control.flags import NAMESPACE as FLAGS_CONFIG
from meshkit.credentials import ServiceCredentials, TokenSource
from meshkit.db import Database
from meshkit.events import (
    OUTBOX_MIGRATION,
    Consumers,
    EventCatalog,
    EventConsumer,
    EventMap,
    EventPublisher,
    Handler,
    Outbox,
    OutboxRelay,
    reader_catalog,
)
from meshkit.http import HttpServer
from meshkit.server import MeshServer, ServiceBinding, create_server, run_service
from meshkit.settings import ServiceSettings, SettingsError, load_settings

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication
    from openfeature.client import OpenFeatureClient

S = TypeVar("S", bound=ServiceSettings)
T = TypeVar("T")
# How long a service's build waits for its configuration before serving the last known good.
CONFIG_WAIT_S = 2.0
log = logging.getLogger("meshkit.service")
# The process's flag provider (ctx.flags): OpenFeature has one global API, so one provider, made
# by the first service that asks and given up when that service stops.
_flags_lock = threading.Lock()
_flags_provider: MeshFlagProvider | None = None


def binding(servicer: object, add_to_server: Callable[[Any, grpc.Server], None]) -> ServiceBinding:
    """The ``ServiceBinding`` of ``servicer`` with its generated ``add_XServicer_to_server``; the
    full service name is read from what that function registers."""
    recorder = _Recorder()
    add_to_server(servicer, recorder)  # type: ignore[arg-type]
    if not recorder.names:
        raise ValueError(f"{add_to_server.__name__} registered no service")
    return ServiceBinding(servicer, add_to_server, recorder.names[0])


class _Recorder:
    """Stands in for a grpc.Server to learn which service an ``add_..._to_server`` registers."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add_generic_rpc_handlers(self, handlers: Sequence[Any]) -> None:
        self.names.extend(handler.service_name() for handler in handlers)

    def add_registered_method_handlers(self, name: str, handlers: Any) -> None:
        if name not in self.names:
            self.names.append(name)


class ServiceContext(Generic[S]):
    """What a service's ``build`` function is given: its settings and the kit's plumbing.

    Built once per server, on the thread that builds it. ``connect``, ``add_worker`` and
    ``on_stop`` are for ``build`` only.
    """

    def __init__(  # noqa: PLR0917 - built by the kit only
        self,
        name: str,
        settings: S,
        db: Database | None,
        events: EventPublisher[Any] | None,
        reads: EventCatalog | None = None,
        authorizer: authz.Authorizer | None = None,
        credentials: TokenSource | None = None,
        trail: _DbTrail | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._db = db
        self._events = events
        self._reads = reads
        self.authz = authorizer or authz.Authorizer(name, None, None)
        """Who may call what: ``ctx.authz.owners["order_id"] = authz.by_id(lookup)`` tells it
        who owns a resource (the subject, or None; see ``authz.OwnerResolver``);
        ``ctx.authz.verifier`` may be replaced (identity could verify with its own keys)."""
        self.credentials = credentials
        self._trail = trail  # where ctx.audit writes
        self.workers: list[tuple[str, Callable[[threading.Event], None]]] = []
        self.closers: list[Callable[[], None]] = []
        self.channels: list[grpc.Channel] = []
        self.peers: list[str] = []  # the names connect() was given (their breakers are shown)
        self._experiments: Experiments | None = None

    @property
    def db(self) -> Database:
        """The service's migrated SQLite database (``Service(database=False)`` has none)."""
        if self._db is None:
            raise RuntimeError(f"{self.name} was declared without a database")
        return self._db

    @property
    def events(self) -> EventPublisher[Any]:
        """The publisher its units of work append events with (the transactional outbox)."""
        if self._events is None:
            raise RuntimeError(f"{self.name} was declared without events")
        return self._events

    def consumers(self, handlers: Mapping[str, Handler]) -> Consumers:
        """A factory of consumers of what the service reads (``Service(consumes=...)``), with
        ``handlers`` by event type: ``consumers(db, group)`` for a database and group of the
        service's choosing (``consume`` is the usual single one)."""
        if self._reads is None:
            raise RuntimeError(f"{self.name} was declared without `consumes`")
        return Consumers(
            self.settings.kafka_bootstrap,
            self.settings.schema_registry_url,
            self._reads,
            handlers,
            create_topics=self.settings.kafka_create_topics,
        )

    def consume(
        self, handlers: Mapping[str, Handler], *, group: str | None = None
    ) -> EventConsumer:
        """Consume what the service reads into ``ctx.db`` (its migrations need INBOX_MIGRATION),
        as consumer group ``group`` (default: the service's name), on a worker thread while the
        server runs; closed on stop."""
        consumer = self.consumers(handlers)(self.db, group or self.name)
        self.add_worker("consumer", consumer.run_forever)
        self.on_stop(consumer.close)
        return consumer

    def connect(self, peer: str) -> grpc.Channel:
        """A channel to the mesh service ``peer`` (by name; see ``meshkit.addresses``), with
        retries and trace propagation; closed when the server stops."""
        channel = connect(peer, credentials=self.credentials)
        self.channels.append(channel)
        self.peers.append(peer)
        return channel

    def config(
        self,
        namespace: str,
        *,
        parse: Callable[[Mapping[str, Any]], T],
        default: Mapping[str, Any] | None = None,
    ) -> LiveConfig[T]:
        """The namespace's document from the control service, live (meshkit.control.config):
        ``parse`` makes the service's value of it and raises ``ConfigRejected`` for a version it
        cannot run (NACKed; the previous stays); ``default`` is served before any version. Its
        last known good is kept in ``<db dir>/<name>.config/``. Started now, waiting up to
        ``CONFIG_WAIT_S`` for the live version (else the last known good, else the default,
        with a WARNING saying which); closed on stop. Without a control service in mesh.toml
        (or ``MESH_ADDRESS_CONTROL``) it serves the last known good or the default and says so.
        """
        # Its own channel (meshkit.client.connect by name, with the service's credentials), not
        # ``connect``'s: a watch is a call that stays open, and under the kit's breaker its
        # half-open trial would never end; the watch has its own backoff instead.
        live = LiveConfig(
            namespace,
            parse=parse,
            default=default or {},
            credentials=self.credentials,
            cache_dir=self.settings.db_path.parent / f"{self.name}.config",
            client=f"{self.name}@{socket.gethostname()}:{os.getpid()}",
        )
        self.on_stop(live.close)
        live.start(CONFIG_WAIT_S)
        return live

    def serve_http(
        self,
        app: WSGIApplication,
        *,
        port: int | None = None,
        threads: int = 8,
        access_log: bool = False,
    ) -> HttpServer:
        """Serve the WSGI ``app`` on 127.0.0.1 while the server runs (see meshkit.http): on
        ``port``, default the settings' ``http_port`` (``<NAME>_HTTP_PORT``, else the
        component's ``http_port`` in mesh.toml). Bound now, so a busy port fails the build.
        ``access_log``: one INFO line per request (an edge's), else DEBUG."""
        if port is None:
            port = getattr(self.settings, "http_port", None)
            if port is None:
                raise RuntimeError(f"{self.name}'s settings have no http_port")
        server = HttpServer(
            app,
            name=f"{self.name}-http",
            host=self.settings.host,
            port=port,
            threads=threads,
            grace=self.settings.grace_seconds,
            access_log=access_log,
        )
        self.add_worker("http", server.serve_forever)
        self.on_stop(server.close)
        return server

    @property
    def flags(self) -> OpenFeatureClient:
        """The OpenFeature client of the service (``api.get_client(name)``) over the process's
        flag provider: a ``MeshFlagProvider`` of the live ``flags`` namespace (``ctx.config``),
        made by the first service that asks and set as OpenFeature's provider, so
        ``openfeature.api.get_client()`` anywhere in the process evaluates the same flags.
        Without a flag set yet (no control service reached, no last known good) flags answer
        their defaults (PROVIDER_NOT_READY, WARNING at the first use) until one arrives. When the
        service that made it stops, the next ``ctx.flags`` makes a new one."""
        global _flags_provider  # noqa: PLW0603 - one OpenFeature provider per process
        with _flags_lock:
            if _flags_provider is None:
                live = self.config(FLAGS_CONFIG, parse=parse_flag_set, default=EMPTY_FLAG_SET)
                provider = _flags_provider = MeshFlagProvider(live)

                def forget() -> None:
                    global _flags_provider  # noqa: PLW0603
                    with _flags_lock:
                        if _flags_provider is provider:
                            _flags_provider = None

                self.on_stop(forget)
                try:
                    # And wait: initialize is instant, and an evaluation right after the build
                    # must not meet a provider the SDK still marks NOT_READY.
                    openfeature_api.set_provider_and_wait(provider)
                except ProviderNotReadyError as exc:
                    log.warning("flags: %s", exc)
        return openfeature_api.get_client(self.name)

    @property
    def experiments(self) -> Experiments:
        """The service's experiments client (meshkit.control.experiments) over the live
        ``experiments`` namespace (``ctx.config``), writing exposures and ``convert``'s
        conversions through the service's outbox, else the kit's (for a service without a
        database: ``<name>.kit-outbox.db`` beside its ``db_path``, with a relay of its own).
        First use in ``build``: it starts the watch and, for the kit's outbox, a worker. The
        build fails, naming the subjects, when the registry lacks the experiments' contracts."""
        if self._experiments is None:
            # Checked here, not at every start: only a service that uses experiments needs them.
            EventCatalog.from_package(EXPERIMENTS_NAMESPACE).verify(
                self.settings.schema_registry_url
            )
            trail = self._trail
            if trail is None:  # no database, nothing audited (the gateway): an outbox of the kit's
                path = self.settings.db_path.with_name(f"{self.name}.kit-outbox.db")
                trail, relay = _kit_outbox(self.name, self.settings, path)
                self.add_worker("kit-outbox-relay", relay.run_forever)
                self.on_stop(relay.close)
                self.on_stop(trail.db.close)
            live = self.config(EXPERIMENTS_CONFIG, parse=parse_experiments)
            writer = trail

            def publish(event: Any) -> None:
                writer.write(event, event_id=event.event_id)

            self._experiments = Experiments(live, publish, service=self.name)
        return self._experiments

    def audit(self, entry: AuditEntry) -> None:
        """Record ``entry`` on its own, in a transaction of its own: an important action that
        changes nothing here, e.g. a read of something sensitive (NIST SP 800-92: reading the
        audit trail is itself audited). A change records its entry in its own unit of work
        instead (``uow.publish``), so the two commit together. Raises RuntimeError for a
        service that keeps no audit outbox (no data of its own)."""
        if self._trail is None:
            raise RuntimeError(f"{self.name} keeps no audit outbox")
        self._trail.write(entry)

    def add_worker(self, name: str, run_forever: Callable[[threading.Event], None]) -> None:
        """Run ``run_forever(stop)`` in a thread while the server runs (see MeshServer)."""
        self.workers.append((name, run_forever))

    def on_stop(self, closer: Callable[[], None]) -> None:
        """Run ``closer`` on stop, after the workers stopped, before channels and database close."""
        self.closers.append(closer)


@dataclasses.dataclass(frozen=True)
class Service(Generic[S]):
    """One service of the mesh: what is particular to it. See the module doc."""

    name: str
    build: Callable[[ServiceContext[S]], Sequence[ServiceBinding]]
    description: str = ""  # --help's text; default: the service package's docstring
    settings: type[S] = ServiceSettings  # type: ignore[assignment]
    migrations: Sequence[str] = ()
    events: EventMap[Any] | None = None
    consumes: Sequence[str] = ()  # proto packages whose events it reads (ctx.consume/consumers)
    peers: Sequence[str] = ()  # services it calls (ctx.connect): listed in --help, checked at start
    database: bool = True

    @property
    def summary(self) -> str:
        """``description``, or the first paragraph of the service package's docstring."""
        if self.description:
            return self.description
        import importlib

        doc = importlib.import_module(self.name).__doc__ or ""
        return doc.strip().split("\n\n")[0]

    @property
    def prefix(self) -> str:
        """Its settings' prefix: ``ORDER_VIEWS`` for ``order_views``."""
        return self.name.upper().replace("-", "_")

    @property
    def source(self) -> str:
        """Its CloudEvents ``ce_source``."""
        return f"/meshkit/{self.name}"

    def defaults(self, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The settings defaults known at run time: the port mesh.toml gives it (when it does)
        and ``.mesh/data/<name>.db``."""
        defaults: dict[str, Any] = {"db_path": Path(f".mesh/data/{self.name}.db")}
        with contextlib.suppress(AddressError):
            defaults["port"] = port_of(self.name, env)
        if any(f.name == "http_port" for f in dataclasses.fields(self.settings)):
            with contextlib.suppress(AddressError):
                defaults["http_port"] = http_port_of(self.name, env)
        return defaults

    def load_settings(self, env: Mapping[str, str] | None = None) -> S:
        """Its settings from ``env`` (default: the process environment); SettingsError names a
        bad key, or says where to configure a port that neither env nor mesh.toml gives."""
        env = os.environ if env is None else env
        defaults = self.defaults(env)
        self._require_addresses(env, defaults)
        return load_settings(self.settings, self.prefix, env, defaults)

    def _require_addresses(self, env: Mapping[str, str], defaults: Mapping[str, Any]) -> None:
        """Its own port and every declared peer's address must be known before it starts."""
        key = f"{self.prefix}_PORT"
        if key not in env and "port" not in defaults:
            raise SettingsError(
                f"{key} is not set and {self.name!r} is not a component of mesh.toml"
                " (set MESH_CONFIG or MESH_ROOT, or run inside the mesh's checkout)"
            )
        for peer in self.peers:
            try:
                address_of(peer, env)
            except AddressError as exc:
                raise SettingsError(f"peer {peer!r}: {exc}") from None

    def peers_help(self, env: Mapping[str, str]) -> str:
        """The --help lines of its peers: the variable and the address it resolves to now."""
        lines = []
        for peer in self.peers:
            try:
                now = f"(now: {address_of(peer, env)})"
            except AddressError:
                now = "(required: not in mesh.toml)"
            lines.append(f"  {env_key(peer):<28} the gRPC address of {peer}, host:port {now}")
        return "\n".join(lines)

    def create(self, settings: S) -> MeshServer:
        """A ready-to-start server (nothing listens until ``start()``/``run()``).

        Raises SchemaRegistrationError (naming the subjects) when it publishes an event whose
        schema is not registered as it is here.
        """
        relay: OutboxRelay | None = None
        publisher: EventPublisher[Any] | None = None
        topics: dict[str, dict[str, str]] = {}  # with the config each topic.json asks for
        if self.events is not None:
            # Its own events, its audit records and its experiments' events, through one outbox.
            catalog = EventCatalog.from_packages(
                self.events.namespace, AUDIT_NAMESPACE, EXPERIMENTS_NAMESPACE
            )
            outbox = Outbox(catalog, settings.schema_registry_url, source=self.source)
            # The experiments' contracts are checked by ctx.experiments, for the services that
            # use them; the others need not have them registered.
            EventCatalog.from_packages(self.events.namespace, AUDIT_NAMESPACE).verify(
                settings.schema_registry_url
            )
            publisher = EventPublisher(
                outbox, with_experiment_events(self.events), AuditTrail(outbox, self.name)
            )
            topics = catalog.topic_configs
        reads = None
        if self.consumes:
            # A reader refuses to start when its reader schemas cannot read what is registered.
            reads = reader_catalog(self.consumes)
            reads.verify(settings.schema_registry_url, readers=True)
        db = Database(settings.db_path, self.migrations) if self.database else None
        if db is not None and self.events is not None:
            relay = OutboxRelay(
                db,
                settings.kafka_bootstrap,
                topics=topics,
                create_topics=settings.kafka_create_topics,
            )
        trail, audit_relay = self._audit_trail(settings, db, publisher)
        authorizer = authz.Authorizer(
            self.name,
            _verifier(settings),
            _policy(self.name),
            on_denied=None if trail is None else _denial_recorder(trail),
        )
        ctx = ServiceContext(
            self.name,
            settings,
            db,
            publisher,
            reads,
            authorizer,
            _credentials(self.name, settings),
            trail,
        )
        try:
            bindings = self.build(ctx)
        except BaseException:
            # Undo what build got as far as: its closers, then channels, then the database.
            for close in [*ctx.closers, *(c.close for c in ctx.channels)]:
                with contextlib.suppress(Exception):
                    close()
            if db is not None:
                db.close()
            raise
        server = create_server(self.name, settings, bindings, authorizer=ctx.authz)
        if audit_relay is not None:
            server.add_worker("audit-relay", audit_relay.run_forever)
            server.on_stop(audit_relay.close)
            assert trail is not None  # the relay moves that trail's outbox
            server.on_stop(trail.db.close)
        _wire(server, ctx, relay, db)
        return server

    def _audit_trail(
        self, settings: S, db: Database | None, publisher: EventPublisher[Any] | None
    ) -> tuple[_DbTrail | None, OutboxRelay | None]:
        """Where the kit's own audit records (denials, ``ctx.audit``) go: the service's outbox,
        or one of the kit's beside its database, with its relay, when it publishes nothing."""
        if db is not None and publisher is not None:
            return _DbTrail(db, publisher), None
        if not self.database and not self.consumes:
            return None, None  # no data of its own (the gateway): nothing of it to audit
        path = settings.db_path.with_name(f"{self.name}.audit-outbox.db")
        try:
            return _kit_outbox(self.name, settings, path)
        except Exception as exc:  # noqa: BLE001 - denials then go to the log only
            log.warning("%s: audit records of denials go to the log only: %s", self.name, exc)
            return None, None

    def main(self, argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
        """``python -m <name>``: settings, logging, tracing, build, serve until SIGTERM.

        ``--help`` lists every setting with its default; a bad setting exits 2 naming the key.
        """
        args = list(sys.argv[1:] if argv is None else argv)
        env = os.environ if env is None else env
        defaults = self.defaults(env)
        if not (args and args[0] in ("-h", "--help")):
            try:
                self._require_addresses(env, defaults)
            except SettingsError as exc:
                sys.stderr.write(f"{self.name}: bad setting: {exc}\n")
                return 2
        return run_service(
            self.name,
            self.prefix,
            self.settings,
            self.create,
            argv=args,
            env=env,
            description=self.summary
            + (
                "\n\nPeers (by name from mesh.toml; these variables override):\n"
                + self.peers_help(env)
                if self.peers
                else ""
            ),
            defaults=defaults,
            unused=self._unused_settings(),
        )

    def _unused_settings(self) -> set[str]:
        """Settings every service has but this one never reads."""
        unused = set()
        if not self.database:
            unused.add("db_path")
        if self.events is None and not self.consumes:
            unused |= {"kafka_bootstrap", "schema_registry_url", "kafka_create_topics"}
        return unused


def _kit_outbox(name: str, settings: ServiceSettings, path: Path) -> tuple[_DbTrail, OutboxRelay]:
    """An outbox of the kit's at ``path`` for a service that publishes nothing of its own:
    audit records and experiments' events, with its relay. Raises (SchemaRegistrationError,
    Unavailable) when the registry lacks the audit contracts; the experiments' are checked by
    ``ctx.experiments``, which alone writes them."""
    catalog = EventCatalog.from_packages(AUDIT_NAMESPACE, EXPERIMENTS_NAMESPACE)
    outbox = Outbox(catalog, settings.schema_registry_url, source=f"/meshkit/{name}")
    EventCatalog.from_package(AUDIT_NAMESPACE).verify(settings.schema_registry_url)
    db = Database(path, [OUTBOX_MIGRATION])
    relay = OutboxRelay(
        db,
        settings.kafka_bootstrap,
        topics=catalog.topic_configs,
        create_topics=settings.kafka_create_topics,
    )
    return _DbTrail(db, EventPublisher(outbox, EXPERIMENT_EVENTS, AuditTrail(outbox, name))), relay


class _DbTrail:
    """Writes one event (an audit entry, an exposure) in a transaction of its own: a denial or
    an exposure changes nothing else."""

    def __init__(self, db: Database, sink: Any) -> None:
        self.db = db
        self._sink = sink

    def write(self, entry: Any, *, event_id: str | None = None) -> None:
        with self.db.transaction() as conn:
            self._sink.publish(conn, entry, event_id=event_id)


def _wire(
    server: MeshServer, ctx: ServiceContext[Any], relay: OutboxRelay | None, db: Database | None
) -> None:
    """Give ``server`` what ``build`` asked for: its workers, the relay, the closers (in stop
    order: closers, channels, the breakers' health, the database)."""
    for name, run_forever in ctx.workers:
        server.add_worker(name, run_forever)
    if relay is not None:
        server.add_worker("outbox-relay", relay.run_forever)
        server.on_stop(relay.close)
    for closer in ctx.closers:
        server.on_stop(closer)
    for channel in ctx.channels:
        server.on_stop(channel.close)
    if ctx.peers:
        server.on_stop(_show_breakers(server, ctx.peers))
    if db is not None:
        server.on_stop(db.close)


def _show_breakers(server: MeshServer, peers: Sequence[str]) -> Callable[[], None]:
    """Show the peers' circuit breakers in ``server``'s health (``meshkit.breaker/<peer>``:
    SERVING closed, NOT_SERVING open, UNKNOWN half-open), now and on every change; returns the
    function that stops it."""
    status = health_pb2.HealthCheckResponse
    shown = {
        resilience.State.CLOSED: status.SERVING,
        resilience.State.OPEN: status.NOT_SERVING,
        resilience.State.HALF_OPEN: status.UNKNOWN,
    }
    registry = resilience.downstreams()
    names = set(peers)

    def show(downstream: str, state: resilience.State) -> None:
        if downstream in names:
            server.health.set(resilience.HEALTH_PREFIX + downstream, shown[state])

    stop = registry.listen(show)
    for peer in names:
        show(peer, registry.breaker(peer).state)
    return stop


def _denial_recorder(trail: _DbTrail) -> authz.DenialRecorder:
    def record(
        principal: authz.Principal | None, rule: authz.Rule, resource_id: str, why: str
    ) -> None:
        trail.write(
            AuditEntry(
                rule.permission or rule.method,
                DENIED,
                resource_type=rule.resource_type,
                resource_id=resource_id,
                reason=why,
                actor=Actor.of(principal),
                details={"rpc": rule.method},
            )
        )

    return record


def _verifier(settings: ServiceSettings) -> authz.Verifier | None:
    """identity's tokens, by its JWKS (MESH_AUTH_*, else identity's HTTP side in mesh.toml)."""
    from meshkit.tokens import TokenVerifier

    jwks, issuer = settings.auth_jwks_url, settings.auth_issuer
    if not jwks or not issuer:
        try:
            identity = http_url_of("identity")
        except AddressError:
            if not jwks:
                return None
            identity = ""
        jwks = jwks or f"{identity}/.well-known/jwks.json"
        issuer = issuer or identity
    return TokenVerifier(jwks, issuer=issuer, audience=settings.auth_audience)


def _policy(name: str) -> authz.Policy | None:
    """The service package's policy.cedar (None: it has none, and every private RPC is denied)."""
    try:
        return authz.Policy.from_package(name)
    except (FileNotFoundError, ModuleNotFoundError):
        log.warning("%s has no %s: every RPC that is not public is denied", name, authz.POLICY_FILE)
        return None


def _credentials(name: str, settings: ServiceSettings) -> TokenSource | None:
    """The service's own token source: client_credentials at identity's token endpoint."""
    try:
        token_url = f"{http_url_of('identity')}/token"
    except AddressError:
        return None
    secret = settings.client_secret
    if not secret:
        secret = f"dev-{name}-secret"
        log.debug(
            "%s uses the development client secret (set %s_CLIENT_SECRET)", name, name.upper()
        )
    return ServiceCredentials(token_url, name, secret)
