"""Run a real, local Apache Kafka 4.x broker (KRaft, one combined broker+controller node).

    scripts/kafka start|stop|status|logs [--help]         (the checkout's wrapper of this module)
    python -m mesh_runner.local_kafka start|stop|status|logs [--help]

`mesh up --kafka local` and `mesh down` call ``cmd_start`` / ``cmd_stop`` in process.

No Docker and no Kafka distribution tarball: the broker's jars come from Maven Central through
`mvn dependency:copy-dependencies` (a throwaway pom next to the jars), fetched once into
<mesh root>/.cache/kafka/<version>/libs; Maven's ~/.m2 is the download cache. Runtime state
(config, KRaft log dirs, pid file, broker log) lives in <mesh root>/.mesh/kafka/ or
$KAFKA_DATA_DIR. The mesh root is the directory of mesh.toml: the checkout for scripts/kafka,
else found from $MESH_ROOT or upward from the working directory (mesh_runner.config.find_root).

Listens on 127.0.0.1:9092 (PLAINTEXT) and 127.0.0.1:9093 (controller) only, or on
$KAFKA_PORT / $KAFKA_CONTROLLER_PORT. Two more brokers of one checkout never touch that one:
- ``--port-offset N`` (or $MESH_PORT_OFFSET): the broker of `mesh --port-offset N up --kafka
  local`, on 9092+N / 9093+N with its data in <mesh root>/.mesh/offset-N/.mesh/kafka;
- ``--test``: the test suite's broker (tests/support/kafka.py), on 19092 / 19093 with its data in
  <mesh root>/.cache/test-kafka, so `make test` leaves a developer's .mesh/ alone.

This runs before .venv exists (CI calls scripts/kafka straight after checkout), so it is stdlib
only, and so is everything it imports (mesh_runner.config).
Exit codes: 0 ok / running, 1 failure, 2 usage, 3 not running (status).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

from mesh_runner.config import ConfigError, find_root, offset_root, port_offset_from_env

# Newest 4.x whose artifacts are all on Maven Central. 4.4.0 is listed there (2026-11-20), but its
# kafka-tools-api jar, a runtime dependency of kafka_2.13, is missing (404), so it cannot resolve.
KAFKA_VERSION = "4.3.1"
SCALA_VERSION = "2.13"
# Kafka 4.x logs through SLF4J 1.7 (its pom pins slf4j-api 1.7.36), so the matching log4j2 binding
# is log4j-slf4j-impl, not log4j-slf4j2-impl (that one would silently fall back to NOP logging).
LOG4J_VERSION = "2.26.1"
# Pinned because Maven 3.8's super-POM default (2.8) predates useful copy-dependencies options.
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

HOST = "127.0.0.1"
PORT = 9092
CONTROLLER_PORT = 9093
# The test suite's broker: far from the default and from any sensible --port-offset of the mesh.
TEST_PORT = 19092
TEST_CONTROLLER_PORT = 19093
TEST_PORT_ENV = "MESH_TEST_KAFKA_PORT"
NODE_ID = 1

START_TIMEOUT_S = float(os.environ.get("KAFKA_START_TIMEOUT", "120"))
STOP_TIMEOUT_S = float(os.environ.get("KAFKA_STOP_TIMEOUT", "30"))
HEAP_OPTS = os.environ.get("KAFKA_HEAP_OPTS", "-Xms128m -Xmx512m")

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_NOT_RUNNING = 0, 1, 2, 3


def log(msg: str) -> None:
    """Progress goes to stderr; stdout stays clean for callers that capture it."""
    print(msg, file=sys.stderr, flush=True)


class LocalKafkaError(RuntimeError):
    """The broker could not be fetched, started or stopped; the message says why."""


class Paths:
    """Where the jars are cached (``cache``), everything the running broker owns (``data``), and
    the ports it listens on: one broker per data dir, each on its own ports."""

    def __init__(
        self, cache: Path, data: Path, port: int = PORT, controller_port: int = CONTROLLER_PORT
    ) -> None:
        self.port = port
        self.controller_port = controller_port
        self.bootstrap = f"{HOST}:{port}"
        self.cache = cache
        self.libs = cache / "libs"
        # Written only after mvn succeeded, so an interrupted download is retried, not half-used.
        self.libs_complete = cache / ".complete"
        self.data = data
        self.config = data / "server.properties"
        self.log4j = data / "log4j2.properties"
        self.kraft = data / "kraft"
        self.meta = self.kraft / "meta.properties"
        self.pid = data / "kafka.pid"
        self.log = data / "kafka.log"
        self.logs_dir = data / "logs"

    @classmethod
    def for_root(cls, mesh_root: Path, port_offset: int = 0) -> Paths:
        """The broker of the mesh rooted at ``mesh_root`` (the directory of its mesh.toml; for
        `mesh --port-offset N`, the shadow root mesh_runner.config.offset_root makes) and run
        with ``port_offset``: its data in <mesh root>/.mesh/kafka, its ports 9092 / 9093 plus
        the offset. $KAFKA_DATA_DIR, $KAFKA_PORT and $KAFKA_CONTROLLER_PORT, when set,
        override (the offset still adds)."""
        data = os.environ.get("KAFKA_DATA_DIR") or mesh_root / ".mesh" / "kafka"
        return cls(
            cache=(mesh_root / ".cache" / "kafka" / KAFKA_VERSION).resolve(),
            data=Path(data).resolve(),
            port=_env_port("KAFKA_PORT", PORT) + port_offset,
            controller_port=_env_port("KAFKA_CONTROLLER_PORT", CONTROLLER_PORT) + port_offset,
        )

    @classmethod
    def for_tests(cls, mesh_root: Path) -> Paths:
        """The test suite's broker: never the mesh's data dir or ports (the developer's KAFKA_*
        settings for their own broker cannot point the tests at it). $MESH_TEST_KAFKA_PORT
        picks another test broker (controller on the next port, data in
        .cache/test-kafka-PORT): `make test` runs its two tiers side by side, one broker each."""
        port = suite_broker_port()
        suffix = "" if port == TEST_PORT else f"-{port}"
        return cls(
            cache=(mesh_root / ".cache" / "kafka" / KAFKA_VERSION).resolve(),
            data=(mesh_root / ".cache" / f"test-kafka{suffix}").resolve(),
            port=port,
            controller_port=port + 1,
        )


def suite_broker_port() -> int:
    """The test broker's port: $MESH_TEST_KAFKA_PORT, else TEST_PORT (19092)."""
    return _env_port(TEST_PORT_ENV, TEST_PORT)


def _env_port(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    if not raw:
        return default
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise LocalKafkaError(f"kafka: ${name} must be a TCP port number, not {raw!r}")
    return int(raw)


# --------------------------------------------------------------------------------------------
# Fetching the jars
# --------------------------------------------------------------------------------------------

POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Throwaway pom written by mesh_runner.local_kafka, only to copy Kafka's runtime jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.meshkit</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{KAFKA_VERSION}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_{SCALA_VERSION}</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>{DEPENDENCY_PLUGIN_VERSION}</version>
      </plugin>
    </plugins>
  </build>
</project>
"""


def ensure_libs(paths: Paths) -> None:
    """Copy Kafka's runtime classpath into ``paths.libs`` once; later calls cost one stat()."""
    if paths.libs_complete.exists():
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError("kafka: 'mvn' not found on PATH (needed once, to fetch Kafka's jars)")
    log(f"==> fetching Apache Kafka {KAFKA_VERSION} jars from Maven Central (first time only)")
    started = time.monotonic()
    paths.cache.mkdir(parents=True, exist_ok=True)
    (paths.cache / "pom.xml").write_text(POM)
    # Start from an empty libs/ so a version bump or a failed run never mixes jar sets.
    shutil.rmtree(paths.libs, ignore_errors=True)
    cmd = [
        mvn,
        "-B",  # batch mode: one "Downloaded from" line per artifact, no progress bars, no prompts
        "-Dstyle.color=never",
        "-f",
        str(paths.cache / "pom.xml"),
        f"org.apache.maven.plugins:maven-dependency-plugin:{DEPENDENCY_PLUGIN_VERSION}:copy-dependencies",
        f"-DoutputDirectory={paths.libs}",
        "-DincludeScope=runtime",
    ]
    transcript: list[str] = []
    downloads = 0
    last_report = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=paths.cache,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        transcript.append(line)
        if line.removeprefix("[INFO] ").startswith("Downloaded from"):
            downloads += 1
            now = time.monotonic()
            # Maven prints one line per file (hundreds); a heartbeat every few seconds is enough.
            if now - last_report >= 3:
                last_report = now
                # "[INFO] Downloaded from central: <url> (82 kB at 67 kB/s)"
                url = line.removeprefix("[INFO] ").split()[3]
                name = url.rsplit("/", 1)[-1]
                log(f"    ... {downloads} files downloaded ({name})")
    if proc.wait() != 0:
        sys.stderr.writelines(transcript[-60:])
        raise LocalKafkaError(f"kafka: mvn failed (exit {proc.returncode}); see output above")
    jars = sorted(paths.libs.glob("*.jar"))
    if not any(j.name == f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar" for j in jars):
        raise LocalKafkaError(
            f"kafka: mvn succeeded but {paths.libs} has no kafka_{SCALA_VERSION} jar"
        )
    paths.libs_complete.write_text(f"{KAFKA_VERSION}\n")
    log(
        f"==> kafka {KAFKA_VERSION}: {len(jars)} jars in {paths.libs} "
        f"({downloads} files downloaded, {time.monotonic() - started:.0f}s)"
    )


# --------------------------------------------------------------------------------------------
# Config, storage format, process
# --------------------------------------------------------------------------------------------


def server_properties(paths: Paths) -> str:
    return f"""# Written by mesh_runner.local_kafka on every start; edits here are overwritten.
process.roles=broker,controller
node.id={NODE_ID}
controller.quorum.bootstrap.servers={HOST}:{paths.controller_port}
listeners=PLAINTEXT://{HOST}:{paths.port},CONTROLLER://{HOST}:{paths.controller_port}
advertised.listeners=PLAINTEXT://{HOST}:{paths.port},CONTROLLER://{HOST}:{paths.controller_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={paths.kraft}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
# Local dev and tests: let the OS page cache do the fsyncs; keep disk use small.
log.retention.hours=24
log.segment.bytes=67108864
"""


# Console only: stdout is redirected to kafka.log, which the `logs` command follows.
LOG4J2_PROPERTIES = """# Written by mesh_runner.local_kafka: INFO to stdout, noisy loggers WARN.
status = warn
# Keep logging until the JVM exits, so the broker's own shutdown hook can log its last steps.
shutdownHook = disable
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = warn
logger.network.name = kafka.network.RequestChannel$
logger.network.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


def java_cmd(paths: Paths, main_class: str, *args: str) -> list[str]:
    java = shutil.which("java")
    if java is None:
        raise LocalKafkaError("kafka: 'java' not found on PATH (Kafka 4.x needs Java 17+)")
    return [
        java,
        *HEAP_OPTS.split(),
        # kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS, minus what only matters at scale.
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:InitiatingHeapOccupancyPercent=35",
        "-XX:+ExplicitGCInvokesConcurrent",
        "-Djava.awt.headless=true",
        f"-Dkafka.logs.dir={paths.logs_dir}",
        f"-Dlog4j2.configurationFile={paths.log4j}",
        "-cp",
        f"{paths.libs}/*",
        main_class,
        *args,
    ]


def random_cluster_id() -> str:
    """Kafka's Uuid.randomUuid().toString(): url-safe base64 of 16 random bytes, unpadded.

    Done here rather than with `StorageTool random-uuid` to save a JVM start. Kafka rejects ids
    whose text starts with '-' (they parse as command-line flags), so do the same.
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def ensure_formatted(paths: Paths) -> None:
    """Format the KRaft storage once; re-formatting a formatted dir is an error in Kafka."""
    if paths.meta.exists():
        return
    cluster_id = random_cluster_id()
    log(f"==> formatting KRaft storage in {paths.kraft} (cluster id {cluster_id})")
    # --standalone: a dynamic quorum with this node as the only voter, which is what
    # controller.quorum.bootstrap.servers (rather than static controller.quorum.voters) expects.
    result = subprocess.run(
        java_cmd(
            paths,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            cluster_id,
            "-c",
            str(paths.config),
        ),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise LocalKafkaError("kafka: formatting the storage failed; see output above")


def read_pid(paths: Paths) -> int | None:
    try:
        return int(paths.pid.read_text().strip())
    except (OSError, ValueError):
        return None


def is_our_broker(pid: int, paths: Paths) -> bool:
    """True when pid is alive and is the broker started with this data dir's config.

    Checking the command line, not just liveness, guards against a stale pid file whose pid the
    OS has since handed to another process. Zombies count as gone: in containers whose init does
    not reap, a killed broker would otherwise look alive forever.
    """
    proc = Path("/proc") / str(pid)
    if proc.exists():
        try:
            stat = (proc / "stat").read_text()
            state = stat.rsplit(")", 1)[1].split()[0]
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return state != "Z" and b"kafka.Kafka" in cmdline and str(paths.config).encode() in cmdline
    # No procfs (macOS): fall back to plain liveness.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_pid(paths: Paths) -> int | None:
    pid = read_pid(paths)
    if pid is not None and is_our_broker(pid, paths):
        return pid
    return None


# --------------------------------------------------------------------------------------------
# Readiness: speak just enough of the Kafka protocol to ask for cluster metadata
# --------------------------------------------------------------------------------------------

API_METADATA = 3
API_VERSIONS = 18


class ProtocolError(Exception):
    """The peer answered, but not like a Kafka broker."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by peer")
        buf += chunk
    return bytes(buf)


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    client_id = b"mesh-local-kafka"
    # Request header v1 (non-flexible): api_key, api_version, correlation_id, client_id.
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    (size,) = struct.unpack(">i", _recv_exact(sock, 4))
    response = _recv_exact(sock, size)
    (got_corr,) = struct.unpack(">i", response[:4])
    if got_corr != corr:
        raise ProtocolError(f"correlation id {got_corr} != {corr}")
    return response[4:]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def string(self) -> str | None:
        n = self.take(">h")
        if n < 0:
            return None
        text = self.data[self.pos : self.pos + n].decode()
        self.pos += n
        return text


def metadata_brokers(host: str, port: int, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """(node_id, host, port) of the brokers a Kafka server at host:port reports as alive.

    A KRaft broker lists itself only once it has registered with the controller and been
    unfenced, i.e. once it can actually serve produce/fetch, which is the readiness we want.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        # ApiVersions v0 is answered by every broker version, and tells us which Metadata
        # versions this one still accepts (Kafka 4.0 dropped the oldest ones, KIP-896).
        r = _Reader(_request(sock, API_VERSIONS, 0, 1, b""))
        if (err := r.take(">h")) != 0:
            raise ProtocolError(f"ApiVersions error {err}")
        ranges = {}
        for _ in range(r.take(">i")):
            key, lo, hi = r.take(">h"), r.take(">h"), r.take(">h")
            ranges[key] = (lo, hi)
        lo, hi = ranges.get(API_METADATA, (0, -1))
        # v4..v8 share the non-flexible encoding parsed below.
        version = min(hi, 8)
        if version < max(lo, 4):
            raise ProtocolError(f"no usable Metadata version in {lo}..{hi}")
        body = struct.pack(">ib", 0, 0)  # zero topics (not null = all), no auto-create
        if version >= 8:
            body += struct.pack(">bb", 0, 0)  # no authorized-operations lookups
        r = _Reader(_request(sock, API_METADATA, version, 2, body))
        r.take(">i")  # throttle_time_ms
        brokers = []
        for _ in range(r.take(">i")):
            node_id = r.take(">i")
            broker_host = r.string() or ""
            broker_port = r.take(">i")
            r.string()  # rack
            brokers.append((node_id, broker_host, broker_port))
        return brokers


def broker_answers(port: int = PORT, timeout: float = 2.0) -> bool:
    """True when a Kafka broker answers on 127.0.0.1:``port`` and lists itself as alive."""
    try:
        return any(p == port for _, _, p in metadata_brokers(HOST, port, timeout))
    except (OSError, ProtocolError, struct.error):
        return False


def port_in_use(port: int = PORT) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=1):
        return True
    return False


def first_error(path: Path) -> str | None:
    """The broker's first ERROR line: the cause, which a long stack trace pushes out of tail()."""
    try:
        with path.open(errors="replace") as f:
            return next((line.rstrip() for line in f if "] ERROR " in line), None)
    except OSError:
        return None


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def wait_ready(paths: Paths, pid: int) -> int:
    deadline = time.monotonic() + START_TIMEOUT_S
    delay = 0.1
    while time.monotonic() < deadline:
        if broker_answers(paths.port):
            return EXIT_OK
        if not is_our_broker(pid, paths):
            log(f"kafka: the broker (pid {pid}) exited during start-up; last log lines:")
            log(tail(paths.log))
            if cause := first_error(paths.log):
                log(f"kafka: first error: {cause}")
            paths.pid.unlink(missing_ok=True)
            return EXIT_FAIL
        time.sleep(delay)  # poll interval inside a deadline loop, backing off to 0.5 s
        delay = min(delay * 2, 0.5)
    log(f"kafka: not ready on {paths.bootstrap} after {START_TIMEOUT_S:.0f}s; last log lines:")
    log(tail(paths.log))
    return EXIT_FAIL


def cmd_start(paths: Paths) -> int:
    pid = running_pid(paths)
    if pid is not None:
        log(f"kafka: already running (pid {pid})")
        if (rc := wait_ready(paths, pid)) == EXIT_OK:
            print(f"kafka: ready on {paths.bootstrap}", flush=True)
        return rc
    if broker_answers(paths.port):
        # Someone else's broker (docker compose, a distribution): usable, but not ours to manage.
        log(f"kafka: a broker not started by this mesh already answers on {paths.bootstrap}")
        print(f"kafka: ready on {paths.bootstrap}", flush=True)
        return EXIT_OK
    if port_in_use(paths.port):
        log(f"kafka: {paths.bootstrap} is taken by something that is not a Kafka broker")
        return EXIT_FAIL

    started = time.monotonic()
    ensure_libs(paths)
    for d in (paths.data, paths.kraft, paths.logs_dir):
        d.mkdir(parents=True, exist_ok=True)
    paths.config.write_text(server_properties(paths))
    paths.log4j.write_text(LOG4J2_PROPERTIES)
    ensure_formatted(paths)

    log(f"==> starting kafka {KAFKA_VERSION} on {paths.bootstrap} (data: {paths.data})")
    # One log per run (the previous one kept as .1), so errors found in it are this run's.
    if paths.log.exists():
        paths.log.replace(paths.log.with_name(paths.log.name + ".1"))
    with paths.log.open("wb") as out:
        # New session: the broker outlives this script and ignores the caller's Ctrl-C / SIGHUP.
        proc = subprocess.Popen(
            java_cmd(paths, "kafka.Kafka", str(paths.config)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=paths.data,
        )
    tmp = paths.pid.with_suffix(".tmp")
    tmp.write_text(f"{proc.pid}\n")
    tmp.replace(paths.pid)
    rc = wait_ready(paths, proc.pid)
    if rc == EXIT_OK:
        log(f"==> broker up in {time.monotonic() - started:.1f}s (pid {proc.pid}, log {paths.log})")
        print(f"kafka: ready on {paths.bootstrap}", flush=True)
    else:
        # Do not leave a half-started broker behind for the next `start` to trip over.
        stop_pid(paths, proc.pid)
    return rc


def stop_pid(paths: Paths, pid: int) -> None:
    def wait_gone(timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not is_our_broker(pid, paths):
                return True
            time.sleep(0.1)  # poll interval inside a deadline loop
        return not is_our_broker(pid, paths)

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)  # Kafka's shutdown hook flushes logs and closes cleanly
    if not wait_gone(STOP_TIMEOUT_S):
        log(f"kafka: pid {pid} ignored SIGTERM for {STOP_TIMEOUT_S:.0f}s; sending SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not wait_gone(10):
            raise LocalKafkaError(f"kafka: pid {pid} survived SIGKILL")
    paths.pid.unlink(missing_ok=True)


def cmd_stop(paths: Paths) -> int:
    pid = running_pid(paths)
    if pid is None:
        paths.pid.unlink(missing_ok=True)
        if broker_answers(paths.port):
            log(f"kafka: the broker on {paths.bootstrap} was not started by this mesh; left alone")
        else:
            log("kafka: not running")
        return EXIT_OK
    log(f"==> stopping kafka (pid {pid})")
    started = time.monotonic()
    stop_pid(paths, pid)
    log(f"kafka: stopped in {time.monotonic() - started:.1f}s")
    return EXIT_OK


def cmd_status(paths: Paths) -> int:
    pid = running_pid(paths)
    if pid is not None:
        state = "ready" if broker_answers(paths.port) else "starting, not answering yet"
        print(f"kafka: running (pid {pid}, {state}) on {paths.bootstrap}", flush=True)
        return EXIT_OK
    paths.pid.unlink(missing_ok=True)  # stale
    if broker_answers(paths.port):
        print(f"kafka: running on {paths.bootstrap} (not started by this mesh)", flush=True)
        return EXIT_OK
    print("kafka: not running", flush=True)
    return EXIT_NOT_RUNNING


def cmd_logs(paths: Paths, follow_: bool, lines: int) -> int:
    if not paths.log.exists():
        log(f"kafka: no log yet ({paths.log})")
        return EXIT_NOT_RUNNING
    sys.stdout.write(tail(paths.log, lines))
    if follow_:
        with contextlib.suppress(KeyboardInterrupt), paths.log.open(errors="replace") as f:
            f.seek(0, os.SEEK_END)
            while True:
                line = f.readline()
                if line:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                else:
                    time.sleep(0.25)  # tail -f: wait for the broker to write more
    return EXIT_OK


def running(paths: Paths) -> bool:
    """True when a broker answers on the broker's port or ours is starting (``status`` exit 0)."""
    return running_pid(paths) is not None or broker_answers(paths.port)


def main(argv: list[str] | None = None, root: Path | None = None, prog: str | None = None) -> int:
    """The command line: ``root`` is the mesh root (default: found from $MESH_ROOT or the cwd)."""
    if root is None:
        with contextlib.suppress(ConfigError):
            root = find_root()
    libs = f"{root or '<mesh root>'}/.cache/kafka/{KAFKA_VERSION}/libs"
    parser = argparse.ArgumentParser(
        prog=prog or "python -m mesh_runner.local_kafka",
        description=(
            f"Local Apache Kafka {KAFKA_VERSION} (KRaft, single combined node) on "
            f"{HOST}:{PORT}, controller on {HOST}:{CONTROLLER_PORT}. Jars are fetched once from "
            f"Maven Central into {libs}."
        ),
        epilog=(
            "environment: KAFKA_DATA_DIR (default <mesh root>/.mesh/kafka), KAFKA_PORT / "
            "KAFKA_CONTROLLER_PORT (default 9092 / 9093), MESH_PORT_OFFSET (as --port-offset), "
            "KAFKA_HEAP_OPTS "
            f"(default '{HEAP_OPTS}'), KAFKA_START_TIMEOUT / KAFKA_STOP_TIMEOUT (seconds). "
            "exit codes: 0 ok/running, 1 failure, 2 usage, 3 not running."
        ),
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--test",
        action="store_true",
        help=f"the test suite's broker: {HOST}:{TEST_PORT} (controller {TEST_CONTROLLER_PORT}),"
        " data in <mesh root>/.cache/test-kafka; never the developer's .mesh/"
        f" (${TEST_PORT_ENV} picks another: controller on the next port, data in"
        " .cache/test-kafka-PORT)",
    )
    which.add_argument(
        "--port-offset",
        type=int,
        metavar="N",
        help="the broker of `mesh --port-offset N up --kafka local`: ports + N, data in"
        " <mesh root>/.mesh/offset-N/.mesh/kafka (default: $MESH_PORT_OFFSET, else 0)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("start", help="fetch jars if needed, format once, start, wait until ready")
    sub.add_parser("stop", help="SIGTERM, wait, SIGKILL if needed; leaves no process")
    sub.add_parser("status", help="exit 0 when running, 3 when not")
    logs = sub.add_parser("logs", help="print the broker log (-f to follow)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("-n", "--lines", type=int, default=100, help="lines to show (default 100)")
    args = parser.parse_args(argv)
    if root is None:
        log(f"kafka: no mesh.toml in {Path.cwd()} or above: run inside a mesh, or set MESH_ROOT")
        return EXIT_FAIL

    try:
        if args.test:
            paths = Paths.for_tests(root)
        else:
            offset = port_offset_from_env() if args.port_offset is None else args.port_offset
            paths = Paths.for_root(offset_root(root, offset) if offset else root, offset)
        if args.command == "start":
            return cmd_start(paths)
        if args.command == "stop":
            return cmd_stop(paths)
        if args.command == "status":
            return cmd_status(paths)
        return cmd_logs(paths, args.follow, args.lines)
    except (LocalKafkaError, ConfigError) as exc:
        log(str(exc))
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
