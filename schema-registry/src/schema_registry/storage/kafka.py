"""Kafka storage: the registry's state in a compacted `_schemas` topic, in Confluent's own format.

The topic is the source of truth; each instance replays it from the beginning into memory at
open (the memory backend's tables) and keeps consuming it in a thread. A write transaction runs
against that memory under one lock, then produces its records in ONE Kafka transaction and
returns only after this instance's reader has consumed them (read-your-writes); a failed
produce undoes the memory change. The transactional producer's `transactional.id` is one per
registry group (per topic): a second writer fences the first.

Several instances on one topic (``elected=True``, `schema_registry.election` decides): only the
primary writes. `become_primary` makes a fresh transactional producer (its init fences the
previous primary and aborts that one's open transaction), then reads the topic to its end before
the first write, so ids and versions continue after every committed one: none is given twice.
A follower's write transactions may change memory only (fingerprints); one that has records to
publish is refused. `catch_up` waits until this instance has read everything committed so far
(a follower calls it after the primary answered a forwarded write: read-your-writes). The change
counter moves per applied change.

Records are Confluent's (core/.../storage/*Key.java, *Value.java, written by Jackson, compact):
keys `{"keytype":"SCHEMA","subject":S,"version":N,"magic":1}`, `{"keytype":"CONFIG",
["subject":S,]"magic":0}` (no subject: global), MODE alike, DELETE_SUBJECT, CLEAR_SUBJECT, NOOP;
SCHEMA values `{"subject","version","id",["schemaType",]["references",]["metadata",]
["ruleSet",]"schema","deleted"}`; a tombstone hard-deletes a version or forgets a config or mode.
On replay, as Confluent's KafkaStoreMessageHandler applies them: a SCHEMA value with
`deleted: true` is a soft delete, DELETE_SUBJECT soft-deletes versions up to its `version`,
CLEAR_SUBJECT drops the subject's soft-deleted versions, NOOP/ASSOC/CONTEXT and keys this module
cannot read are skipped (logged). Confluent's own reader thread dies on a keytype it does not
know (SchemaRegistryKeyType.forName throws IllegalArgumentException, uncaught), so nothing of
ours but Confluent's record kinds ever goes into the topic.

What is not in Confluent's format stays derivable: fingerprints are placeholders on replay
(`kafka:<id>`) and the registry recomputes them at open (`Registry.migrate_fingerprints`, since
`meta` lives in memory only). A schema stored with no version (`add_schema` alone) is not
written, as Confluent has no record for it. Audit records (the outbox) are produced straight
to their topic (audit.events.v1) in the same Kafka transaction as the `_schemas` records: the
change and its record commit or abort together, with no second store and no relay, so
`pending_outbox()` is always empty (a SQLite outbox beside the topic would be a dual write).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, Final

from confluent_kafka import (
    Consumer,
    IsolationLevel,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from confluent_kafka.admin._config import ConfigResource
from confluent_kafka.admin._listoffsets import OffsetSpec
from confluent_kafka.admin._resource import ResourceType
from confluent_kafka.cimpl import NewTopic

from schema_registry.errors import ErrorCode, RegistryError
from schema_registry.storage.base import (
    GLOBAL,
    OutboxRow,
    Reference,
    Storage,
    StoredSchema,
    SubjectVersion,
    Transaction,
)
from schema_registry.storage.memory import _MemoryTransaction, _State

log = logging.getLogger(__name__)

#: Confluent's default (`kafkastore.topic`).
DEFAULT_TOPIC: Final = "_schemas"
#: How long a write waits for its Kafka transaction, and then for its own records to come back.
WRITE_TIMEOUT_S: Final = 30.0
#: How long opening waits for the broker, topic creation and the replay.
OPEN_TIMEOUT_S: Final = 60.0
#: How long a dead primary's open transaction may hold back every read_committed reader when no
#: instance takes over to fence it (librdkafka's default is 60 s). A write takes milliseconds.
TRANSACTION_TIMEOUT_MS: Final = 10_000

_SEPARATORS = (",", ":")


def _dump(value: Mapping[str, Any]) -> bytes:
    # Jackson's compact output: no spaces, non-ASCII as UTF-8; compaction needs equal key bytes.
    return json.dumps(value, separators=_SEPARATORS, ensure_ascii=False).encode()


# ---------------------------------------------------------------------------------- the format
def schema_key(subject: str, version: int) -> bytes:
    """SchemaKey, fields in its @JsonPropertyOrder (keytype, subject, version, magic 1)."""
    return _dump({"keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1})


def _subject_key(keytype: str, subject: str) -> bytes:
    # ConfigKey/ModeKey/DeleteSubjectKey/ClearSubjectKey: NON_EMPTY drops a null subject (global).
    if subject == GLOBAL:
        return _dump({"keytype": keytype, "magic": 0})
    return _dump({"keytype": keytype, "subject": subject, "magic": 0})


def config_key(subject: str) -> bytes:
    """ConfigKey of a subject, or the global one (no subject) for `GLOBAL`."""
    return _subject_key("CONFIG", subject)


def mode_key(subject: str) -> bytes:
    """ModeKey of a subject, or the global one for `GLOBAL`."""
    return _subject_key("MODE", subject)


def schema_value(schema: StoredSchema, version: SubjectVersion) -> bytes:
    """SchemaValue of one subject version. `schemaType` only when not AVRO, `references`,
    `metadata`, `ruleSet` only when set (Jackson NON_EMPTY; readers default to AVRO)."""
    value: dict[str, Any] = {
        "subject": version.subject,
        "version": version.version,
        "id": schema.id,
    }
    value.update(schema.extras())
    value["schema"] = schema.text
    value["deleted"] = version.deleted
    return _dump(value)


def config_value(subject: str, config: Mapping[str, Any]) -> bytes:
    """ConfigValue: the stored config's fields (Confluent's names) and the subject."""
    value: dict[str, Any] = {} if subject == GLOBAL else {"subject": subject}
    value.update((k, v) for k, v in config.items() if k != "subject")
    return _dump(value)


def mode_value(subject: str, mode: str) -> bytes:
    """ModeValue."""
    value: dict[str, Any] = {} if subject == GLOBAL else {"subject": subject}
    value["mode"] = mode
    return _dump(value)


# ---------------------------------------------------------------------------------- applying
def _subject_of(key: Mapping[str, Any]) -> str:
    subject = key.get("subject")
    return subject if isinstance(subject, str) else GLOBAL


def _references(raw: Any) -> tuple[Reference, ...]:
    if not raw:
        return ()
    return tuple(Reference(str(r["name"]), str(r["subject"]), int(r["version"])) for r in raw)


class _Applier:
    """Applies decoded records to the tables, idempotently: an instance's own records come back
    after the write already changed memory, and change nothing then. Returns whether the record
    changed anything (the change counter moves per change)."""

    def __init__(self, state: _State) -> None:
        self._s = state

    def _tx(self) -> _MemoryTransaction:
        # The memory transaction keeps the indexes; its undo log is dropped (nothing to undo).
        return _MemoryTransaction(self._s, writable=True)

    def apply(self, key: Mapping[str, Any], value: Mapping[str, Any] | None) -> bool:
        keytype = key.get("keytype")
        subject = _subject_of(key)
        if keytype == "SCHEMA":
            version = key.get("version")
            if not isinstance(version, int) or subject == GLOBAL:
                raise ValueError("a SCHEMA key needs a subject and an integer version")
            if value is None:
                return self._remove(subject, version)
            return self._schema(subject, version, value)
        if keytype in ("CONFIG", "MODE"):
            return self._setting(keytype, subject, value)
        if value is None:
            return False  # Confluent ignores every other tombstone
        if keytype in ("DELETE_SUBJECT", "CLEAR_SUBJECT"):
            return self._subject(keytype, subject, value)
        if keytype not in ("NOOP", "ASSOC", "CONTEXT"):
            log.warning("skipping a record with keytype %r", keytype)
        return False

    def _setting(self, keytype: str, subject: str, value: Mapping[str, Any] | None) -> bool:
        table: dict[str, Any] = self._s.configs if keytype == "CONFIG" else self._s.modes
        if value is None:
            return table.pop(subject, None) is not None
        new: Any
        if keytype == "CONFIG":
            new = {k: v for k, v in value.items() if k != "subject"}
        else:
            new = str(value["mode"])
        if table.get(subject) == new:
            return False
        table[subject] = new
        return True

    def _subject(self, keytype: str, subject: str, value: Mapping[str, Any]) -> bool:
        versions = list(self._s.subjects.get(subject, {}).values())
        if keytype == "DELETE_SUBJECT":
            # KafkaStoreMessageHandler.handleDeleteSubject: versions 1..watermark soft-deleted.
            watermark = int(value["version"])
            marked = [v for v in versions if v.version <= watermark and not v.deleted]
            for found in marked:
                self._tx().set_deleted(subject, found.version)
            return bool(marked)
        # CLEAR_SUBJECT (InMemoryCache.clearSubjects): the soft-deleted versions go.
        gone = [v for v in versions if v.deleted]
        for found in gone:
            self._tx().remove_version(subject, found.version)
        return bool(gone)

    def _remove(self, subject: str, version: int) -> bool:
        if self._s.subjects.get(subject, {}).get(version) is None:
            return False
        self._tx().remove_version(subject, version)
        return True

    def _schema(self, subject: str, version: int, value: Mapping[str, Any]) -> bool:
        s = self._s
        schema_id = int(value["id"])
        text = str(value["schema"])
        changed = False
        stored = s.schemas.get(schema_id)
        if stored is None:
            schema = StoredSchema(
                id=schema_id,
                fingerprint=f"kafka:{schema_id}",  # the registry recomputes it at open
                schema_type=str(value.get("schemaType") or "AVRO"),
                text=text,
                references=_references(value.get("references")),
                metadata=value.get("metadata"),
                rule_set=value.get("ruleSet"),
            )
            self._tx().add_schema(schema)
            changed = True
        elif stored.text != text:
            # KafkaStoreMessageHandler.validateUpdate: a second schema under a used id is refused.
            log.error(
                "skipping %s version %d: id %d is another schema's", subject, version, schema_id
            )
            return False
        wanted = SubjectVersion(subject, version, schema_id, bool(value.get("deleted", False)))
        current = s.subjects.get(subject, {}).get(version)
        if current == wanted:
            return changed
        tx = self._tx()
        if current is not None:
            tx.remove_version(subject, version)
        tx.add_version(wanted)
        return True


def decode(key: bytes | None, value: bytes | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A `_schemas` record as (key, value) JSON objects; the value None for a tombstone.
    Raises ValueError for bytes that are not a JSON object key."""
    if key is None:
        raise ValueError("a record without a key")
    parsed_key = json.loads(key)
    if not isinstance(parsed_key, dict):
        raise ValueError("a key that is not a JSON object")
    parsed_value = None if value is None else json.loads(value)
    if parsed_value is not None and not isinstance(parsed_value, dict):
        raise ValueError("a value that is not a JSON object")
    return parsed_key, parsed_value


# ---------------------------------------------------------------------------------- transactions
class _KafkaTransaction(_MemoryTransaction):
    """A memory transaction that also collects the records its changes mean, last per key."""

    def __init__(self, state: _State, *, writable: bool) -> None:
        super().__init__(state, writable=writable)
        self.records: dict[bytes, bytes | None] = {}
        self.outbox: list[OutboxRow] = []

    def _put(self, key: bytes, value: bytes | None) -> None:
        self.records.pop(key, None)  # a later write of one key goes after the others
        self.records[key] = value

    def _version_record(self, subject: str, number: int) -> None:
        found = self._s.subjects[subject][number]
        schema = self._s.schemas[found.schema_id]
        self._put(schema_key(subject, number), schema_value(schema, found))

    def add_version(self, version: SubjectVersion) -> None:
        super().add_version(version)
        self._version_record(version.subject, version.version)

    def set_deleted(self, subject: str, version: int) -> None:
        super().set_deleted(subject, version)
        self._version_record(subject, version)

    def remove_version(self, subject: str, version: int) -> None:
        super().remove_version(subject, version)
        self._put(schema_key(subject, version), None)

    def set_config(self, subject: str, config: dict[str, Any]) -> None:
        super().set_config(subject, config)
        self._put(config_key(subject), config_value(subject, config))

    def delete_config(self, subject: str) -> None:
        had = subject in self._s.configs
        super().delete_config(subject)
        if had:
            self._put(config_key(subject), None)

    def set_mode(self, subject: str, mode: str) -> None:
        super().set_mode(subject, mode)
        self._put(mode_key(subject), mode_value(subject, mode))

    def delete_mode(self, subject: str) -> None:
        had = subject in self._s.modes
        super().delete_mode(subject)
        if had:
            self._put(mode_key(subject), None)

    def add_outbox(self, row: OutboxRow) -> None:
        self._check_writable()
        self.outbox.append(row)


# ---------------------------------------------------------------------------------- the storage
def parse_kafka_url(url: str) -> tuple[str, str] | None:
    """(bootstrap servers, topic) of `kafka://HOST:PORT[,HOST:PORT...][/TOPIC]`, None for
    another scheme. Raises ValueError for a kafka URL without a broker."""
    prefix = "kafka://"
    if not url.startswith(prefix):
        return None
    rest = url[len(prefix) :]
    bootstrap, _, topic = rest.partition("/")
    if not bootstrap or any(not part.rpartition(":")[0] for part in bootstrap.split(",")):
        raise ValueError(f"storage URL {url!r} needs a broker: kafka://HOST:PORT[/TOPIC]")
    return bootstrap, topic or DEFAULT_TOPIC


class KafkaStorage(Storage):
    """A `_schemas` topic replayed into memory (module docstring). Thread-safe. Alone
    (``elected=False``) it writes from the start; elected, only between `become_primary` and
    `step_down`. Either way a second writer on the topic fences this one."""

    shared_across_processes = False

    def __init__(
        self,
        bootstrap: str,
        topic: str = DEFAULT_TOPIC,
        *,
        transactional_id: str | None = None,
        timeout_s: float = OPEN_TIMEOUT_S,
        elected: bool = False,
    ) -> None:
        """Create or check the topic, replay it, start the reader; raises RegistryError
        (STORE_ERROR) when the broker cannot be reached or the topic is unfit. ``elected``:
        one of several instances, writing only once `become_primary` returned."""
        self.bootstrap = bootstrap
        self.topic = topic
        self.transactional_id = transactional_id or f"meshkit-schema-registry.{topic}"
        self._state = _State()
        self._applier = _Applier(self._state)
        self._lock = threading.RLock()  # the tables: readers, the writer's body, the reader
        self._write_lock = threading.Lock()  # one write transaction (and its wait) at a time
        self._applied = threading.Condition(threading.Lock())
        self._applied_offset = -1  # offset of the last record the reader processed
        # The next offset the reader will look at: past transaction markers too, which are never
        # delivered but move the end of the partition (the end-of-partition event says where).
        self._position = 0
        self._caught_up = False
        self._counter = 0
        self._known_topics: set[str] = set()
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._ensure_topic(timeout_s)
        self._primary = not elected
        # Alone: fences an older writer with this id and aborts its open transaction, so the
        # read_committed replay below is not held up by it. Elected: only a primary has one.
        self._producer: Producer | None = self._new_producer(timeout_s) if self._primary else None
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                # Never joins the group (assign(), no commits): librdkafka only wants a name.
                "group.id": f"{self.transactional_id}.reader.{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.assign([TopicPartition(topic, 0, 0)])
        self._reader = threading.Thread(target=self._read, name=f"kafka-store:{topic}", daemon=True)
        self._reader.start()
        self._wait(lambda: self._caught_up, timeout_s, "replaying the topic")
        log.info("replayed %s: %d schemas", topic, len(self._state.schemas))

    def _new_producer(self, timeout_s: float) -> Producer:
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "transactional.id": self.transactional_id,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 0,
                "transaction.timeout.ms": TRANSACTION_TIMEOUT_MS,
            }
        )
        try:
            producer.init_transactions(timeout_s)
        except KafkaException as exc:
            raise RegistryError(ErrorCode.STORE_ERROR, f"Kafka store: {exc}") from exc
        return producer

    # ------------------------------------------------------------------ primary
    @property
    def is_primary(self) -> bool:
        """Whether this instance may write now (always, unless elected)."""
        return self._primary

    def become_primary(self, timeout_s: float = OPEN_TIMEOUT_S) -> None:
        """Take over writing: fence the previous primary (a new producer with the group's
        transactional.id; its open transaction is aborted), read the topic to its end, then
        accept writes. Raises RegistryError when the broker does not answer in time."""
        started = time.monotonic()
        producer = self._new_producer(timeout_s)
        try:
            # After the fence nobody else can commit: the end now is the end for good.
            self.catch_up(timeout_s)
        except BaseException:
            producer.flush(0)
            raise
        with self._write_lock:
            self._producer = producer
            self._primary = True
        log.info(
            "primary of %s: fenced the previous writer, read to offset %d in %.0f ms",
            self.topic,
            self._position,
            (time.monotonic() - started) * 1000,
        )

    def step_down(self) -> None:
        """Stop writing (another instance was elected). A write under way may still commit
        until the new primary fences this instance's producer; the next one is refused."""
        self._primary = False
        log.info("no longer the primary of %s", self.topic)

    def end_offset(self, timeout_s: float = WRITE_TIMEOUT_S) -> int:
        """The end of what is committed (the last stable offset) as the broker says now."""
        # Not the reader's consumer: its watermark query waits behind the reader's poll.
        partition = TopicPartition(self.topic, 0)
        try:
            futures = self._admin.list_offsets(
                {partition: OffsetSpec.latest()},  # type: ignore[no-untyped-call]
                isolation_level=IsolationLevel.READ_COMMITTED,
                request_timeout=timeout_s,
            )
            return int(futures[partition].result(timeout=timeout_s).offset)
        except KafkaException as exc:
            raise RegistryError(ErrorCode.STORE_ERROR, f"Kafka store: {exc}") from exc

    def catch_up(self, timeout_s: float = WRITE_TIMEOUT_S) -> None:
        """Return once this instance has read every record committed before the call
        (RegistryError OPERATION_TIMEOUT otherwise, e.g. behind a dead writer's open
        transaction that nobody fenced yet)."""
        end = self.end_offset(timeout_s)
        self._wait(lambda: self._position >= end, timeout_s, f"reading {self.topic} to {end}")

    # ------------------------------------------------------------------ topic
    def _ensure_topic(self, timeout_s: float) -> None:
        admin = self._admin
        try:
            metadata = admin.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise RegistryError(
                ErrorCode.STORE_ERROR, f"Kafka store: cannot reach {self.bootstrap}: {exc}"
            ) from exc
        found = metadata.topics.get(self.topic)
        if found is None or found.error is not None:
            # Confluent's KafkaStore.createSchemaTopic: 3 replicas when the cluster has them,
            # min.insync.replicas below that so one broker may go down.
            replicas = min(3, len(metadata.brokers))
            config = {
                "cleanup.policy": "compact",
                "min.insync.replicas": str(max(1, replicas - 1)),
            }
            future = admin.create_topics(
                [NewTopic(self.topic, 1, replicas, config=config)], request_timeout=timeout_s
            )[self.topic]
            try:
                future.result(timeout=timeout_s)
                log.info("created topic %s %s", self.topic, config)
                return
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                exists = isinstance(error, KafkaError) and (
                    error.code() == KafkaError.TOPIC_ALREADY_EXISTS
                )
                if not exists:
                    raise RegistryError(
                        ErrorCode.STORE_ERROR, f"Kafka store: cannot create {self.topic}: {exc}"
                    ) from exc
            metadata = admin.list_topics(topic=self.topic, timeout=timeout_s)
            found = metadata.topics[self.topic]
        # Confluent's KafkaStore.verifySchemaTopic refuses these too: with several partitions
        # records lose their order, and without compaction history is deleted by retention.
        if len(found.partitions) != 1:
            raise RegistryError(
                ErrorCode.STORE_ERROR,
                f"Kafka store: topic {self.topic} has {len(found.partitions)} partitions; "
                "it must have exactly 1",
            )
        resource = ConfigResource(ResourceType.TOPIC, self.topic)
        configs = admin.describe_configs([resource], request_timeout=timeout_s)[resource]
        policy = configs.result(timeout=timeout_s).get("cleanup.policy")
        if policy is None or policy.value != "compact":
            raise RegistryError(
                ErrorCode.STORE_ERROR,
                f"Kafka store: topic {self.topic} has cleanup.policy="
                f"{policy.value if policy else '?'}; it must be compact",
            )

    # ------------------------------------------------------------------ reader
    def _read(self) -> None:
        try:
            while not self._stop.is_set():
                msg = self._consumer.poll(0.1)
                if msg is None:
                    continue
                self._handle(msg)
        except BaseException as exc:  # any death must reach the waiting writers
            log.exception("the reader of %s died", self.topic)
            self._failure = exc
            with self._applied:
                self._applied.notify_all()

    def _handle(self, msg: Message) -> None:
        error = msg.error()
        if error is not None:
            if error.code() == KafkaError._PARTITION_EOF:
                with self._applied:
                    self._caught_up = True
                    self._position = max(self._position, msg.offset() or 0)
                    self._applied.notify_all()
                return
            if error.fatal():
                raise KafkaException(error)
            log.warning("reading %s: %s", self.topic, error)
            return
        offset = msg.offset() or 0
        try:
            key, value = decode(msg.key(), msg.value())
            with self._lock:
                if self._applier.apply(key, value):
                    self._counter += 1
        except (ValueError, KeyError, TypeError) as exc:
            log.error("skipping the record at %s offset %d: %s", self.topic, offset, exc)
        with self._applied:
            self._applied_offset = offset
            self._position = max(self._position, offset + 1)
            self._applied.notify_all()

    def _wait(self, done: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        with self._applied:
            while not done():
                if self._failure is not None:
                    raise RegistryError(
                        ErrorCode.STORE_ERROR, f"Kafka store reader failed: {self._failure}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RegistryError(
                        ErrorCode.OPERATION_TIMEOUT, f"Kafka store: timed out {what}"
                    )
                self._applied.wait(remaining)

    # ------------------------------------------------------------------ Storage
    @contextmanager
    def read(self) -> Iterator[Transaction]:
        with self._lock:
            yield _MemoryTransaction(self._state, writable=False)

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        with self._write_lock:
            last_offset = -1
            with self._lock:
                tx = _KafkaTransaction(self._state, writable=True)
                try:
                    yield tx
                    if tx.records or tx.outbox:
                        last_offset = self._publish(tx.records, tx.outbox)
                except BaseException:
                    for undo in reversed(tx.undo):
                        undo()
                    raise
                if tx.undo:
                    self._counter += 1
            if last_offset >= 0:
                # Outside the tables' lock: the reader needs it to apply (and skip) them.
                self._wait(
                    lambda: self._applied_offset >= last_offset,
                    WRITE_TIMEOUT_S,
                    "waiting to read this write back",
                )

    def _publish(self, records: Mapping[bytes, bytes | None], outbox: list[OutboxRow]) -> int:
        """Produce in one Kafka transaction; the offset of the last `_schemas` record (-1 when
        only outbox rows went). Raises RegistryError (STORE_ERROR) when it did not commit."""
        producer = self._producer
        if not self._primary or producer is None:
            raise RegistryError(
                ErrorCode.STORE_ERROR,
                f"Kafka store: this instance is not the primary of {self.topic}; "
                "writes go to the primary",
            )
        self._ensure_outbox_topics(outbox)
        offsets: list[int] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            if err is None and msg.topic() == self.topic:
                offsets.append(msg.offset() or 0)

        try:
            producer.begin_transaction()
            for key, value in records.items():
                producer.produce(
                    self.topic, value=value, key=key, partition=0, on_delivery=delivered
                )
            for row in outbox:
                producer.produce(
                    row.topic, value=row.value, key=row.key.encode(), headers=list(row.headers)
                )
            remaining = producer.flush(WRITE_TIMEOUT_S)
            if remaining:
                raise KafkaException(KafkaError(KafkaError._TIMED_OUT, "records not delivered"))
            producer.commit_transaction(WRITE_TIMEOUT_S)
        except KafkaException as exc:
            with suppress(KafkaException):
                producer.abort_transaction(WRITE_TIMEOUT_S)
            raise RegistryError(ErrorCode.STORE_ERROR, f"Kafka store: write failed: {exc}") from exc
        if records and len(offsets) != len(records):
            raise RegistryError(ErrorCode.STORE_ERROR, "Kafka store: a record was not delivered")
        return max(offsets, default=-1)

    def _ensure_outbox_topics(self, outbox: list[OutboxRow]) -> None:
        missing = {row.topic for row in outbox} - self._known_topics
        if not missing:
            return
        # Created with the configs their event catalogs ask for (audit.events.v1's topic.json),
        # as meshkit's relay would create them.
        from meshkit.audit import AUDIT_NAMESPACE
        from meshkit.events import EventCatalog, ensure_topics

        configs = EventCatalog.from_package(AUDIT_NAMESPACE).topic_configs
        ensure_topics(self.bootstrap, {t: configs.get(t, {}) for t in missing})
        self._known_topics |= missing

    def change_counter(self) -> int:
        return self._counter

    def append_outbox(self, row: OutboxRow) -> None:
        with self._write_lock, self._lock:
            self._publish({}, [row])

    def pending_outbox(self) -> list[OutboxRow]:
        """Always empty: rows go to Kafka in their write's transaction (module docstring)."""
        return []

    def close(self) -> None:
        self._stop.set()
        if self._reader.is_alive():
            self._reader.join(timeout=5.0)
        with suppress(KafkaException, RuntimeError):
            self._consumer.close()
        if self._producer is not None:
            self._producer.flush(5.0)
