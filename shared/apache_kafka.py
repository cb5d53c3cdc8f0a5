"""Apache Kafka on this machine: a KRaft cluster of broker processes on loopback.

The tests run three nodes (each a broker and a controller, replication factor 3,
`min.insync.replicas=2`), as production does; `KT_BROKER=kafka kent-together run`
runs one node whose data stays under var/. The jars come from Maven Central
(deploy/tools/fetch-kafka.sh, into a cache folder); nothing is built.

A node can be given a second listener, SASL_SSL with SCRAM-SHA-512, with the
principals created at format time and ACLs enforced (StandardAuthorizer): the
production overlay's handshake, for real. The plain listener stays open to
the tests and between the nodes; its principal (ANONYMOUS) is a super user.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

from shared.bus import end_process
from shared.kafka_security import client_options

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
"""Keep in step with deploy/tools/kafka/pom.xml."""


def kafka_home() -> Path:
    default = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kent-together" / f"kafka-{KAFKA_VERSION}"
    )
    return Path(os.environ.get("KT_KAFKA_HOME", default))


def kafka_libs() -> Path:
    libs = kafka_home() / "libs"
    if not (libs / ".complete").exists():
        raise RuntimeError(
            f"Apache Kafka {KAFKA_VERSION} is not in {libs}: run `make kafka` "
            "(deploy/tools/fetch-kafka.sh fetches it from Maven Central)"
        )
    return libs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the thread that started it ends (Linux), so a
    test run or `kent-together run` that is killed leaves no broker JVMs behind. Start
    nodes from a thread that lives as long as the cluster (the main one, or an executor's)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def new_cluster_id() -> str:
    """What `kafka-storage random-uuid` prints: 16 random bytes, URL-safe base64, no padding.

    Never one starting with '-': the storage tool would read it as an option.
    """
    while True:
        value = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not value.startswith("-"):
            return value


@dataclass(frozen=True)
class SaslListener:
    """A SASL_SSL listener: the server's PEM key and certificate chain, and the SCRAM users to create."""

    keystore_pem: Path
    """Private key (PKCS#8, unencrypted) then the certificate chain, in one PEM file."""
    users: dict[str, str]
    """name -> password; SCRAM-SHA-512 credentials written when storage is formatted."""
    super_users: tuple[str, ...] = ("admin",)


@dataclass
class Node:
    id: int
    port: int
    controller_port: int
    sasl_port: int | None
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class KafkaCluster:
    """Apache Kafka nodes in KRaft combined mode on loopback, each a JVM child process.

    The same controls as the embedded broker (`start`, `stop`, `bootstrap_servers`),
    and per node: `stop_node(id)` (a clean shutdown), `start_node(id)` (with the data
    it had). The faults tests inject (pause, kill) are in tests/support/brokers.py.
    """

    def __init__(
        self,
        root: Path,
        *,
        nodes: int = 3,
        sasl: SaslListener | None = None,
        heap: str = "384m",
        settings: dict[str, str] | None = None,
        base_port: int | None = None,
    ):
        """`base_port` fixes the ports (node i: client base+3(i-1), controller +1, SASL +2); else free ones."""
        self.root = Path(root)
        self.sasl = sasl
        self.heap = heap
        self.extra = settings or {}
        self.replication = min(3, nodes)
        self.min_insync = 2 if nodes >= 3 else 1

        def port(i: int, offset: int) -> int:
            return base_port + 3 * (i - 1) + offset if base_port else _free_port()

        self.nodes = [
            Node(
                id=i,
                port=port(i, 0),
                controller_port=port(i, 1),
                sasl_port=port(i, 2) if sasl else None,
                directory=self.root / f"node-{i}",
            )
            for i in range(1, nodes + 1)
        ]
        self._cluster_id_file = self.root / "cluster.id"

    # -- addresses ---------------------------------------------------------------

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @property
    def sasl_bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{n.sasl_port}" for n in self.nodes)

    def node(self, node_id: int) -> Node:
        return next(n for n in self.nodes if n.id == node_id)

    # -- configuration -----------------------------------------------------------

    def _properties(self, node: Node) -> str:
        voters = ",".join(f"{n.id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        listeners = [f"PLAINTEXT://127.0.0.1:{node.port}", f"CONTROLLER://127.0.0.1:{node.controller_port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{node.port}"]
        settings = {
            "process.roles": "broker,controller",
            "node.id": str(node.id),
            "controller.quorum.voters": voters,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
            "log.dirs": str(node.directory / "data"),
            "num.partitions": "1",
            "default.replication.factor": str(self.replication),
            "min.insync.replicas": str(self.min_insync),
            "offsets.topic.replication.factor": str(self.replication),
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": str(self.replication),
            "transaction.state.log.min.isr": str(self.min_insync),
            "transaction.state.log.num.partitions": "5",
            "share.coordinator.state.topic.replication.factor": str(self.replication),
            "share.coordinator.state.topic.min.isr": str(self.min_insync),
            "group.initial.rebalance.delay.ms": "0",
            "unclean.leader.election.enable": "false",
            # Loopback on two cores: shorter waits than a datacentre's, same semantics.
            "controller.quorum.election.timeout.ms": "1000",
            "controller.quorum.fetch.timeout.ms": "2000",
            "broker.session.timeout.ms": "6000",
            "broker.heartbeat.interval.ms": "1000",
            "replica.lag.time.max.ms": "10000",
            "log.retention.check.interval.ms": "5000",
        }
        if self.sasl:
            listeners.append(f"SASL_SSL://127.0.0.1:{node.sasl_port}")
            advertised.append(f"SASL_SSL://127.0.0.1:{node.sasl_port}")
            supers = ";".join(["User:ANONYMOUS", *(f"User:{u}" for u in self.sasl.super_users)])
            settings |= {
                "sasl.enabled.mechanisms": "SCRAM-SHA-512",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "listener.name.sasl_ssl.ssl.keystore.type": "PEM",
                "listener.name.sasl_ssl.ssl.keystore.location": str(self.sasl.keystore_pem),
                "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
                "super.users": supers,
                "allow.everyone.if.no.acl.found": "false",
            }
        settings["listeners"] = ",".join(listeners)
        settings["advertised.listeners"] = ",".join(advertised)
        settings |= self.extra
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _java(self, node: Node, main: str, *args: str) -> list[str]:
        log4j = node.directory / "log4j2.properties"
        return [
            shutil.which("java") or "java",
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={node.directory}",
            "-cp",
            f"{kafka_libs()}/*",
            main,
            *args,
        ]

    def _write(self, node: Node) -> Path:
        node.directory.mkdir(parents=True, exist_ok=True)
        config = node.directory / "server.properties"
        config.write_text(self._properties(node))
        (node.directory / "log4j2.properties").write_text(
            "status = error\n"
            "appender.file.type = File\nappender.file.name = file\n"
            f"appender.file.fileName = {node.directory / 'server.log'}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\nrootLogger.appenderRef.file.ref = file\n"
            "logger.kafka.name = org.apache.kafka\nlogger.kafka.level = WARN\n"
            "logger.state.name = state.change.logger\nlogger.state.level = WARN\n"
        )
        return config

    def _format(self) -> None:
        """Format every node's storage once (a node formatted before keeps its data)."""
        if not self._cluster_id_file.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            self._cluster_id_file.write_text(new_cluster_id())
        cluster_id = self._cluster_id_file.read_text().strip()
        scram: list[str] = []
        if self.sasl:
            for name, password in self.sasl.users.items():
                scram += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        formatting = []
        for node in self.nodes:
            config = self._write(node)
            if (node.directory / "data" / "meta.properties").exists():
                continue
            formatting.append(
                subprocess.Popen(
                    self._java(
                        node,
                        "kafka.tools.StorageTool",
                        "format",
                        "--ignore-formatted",
                        "-t",
                        cluster_id,
                        "-c",
                        str(config),
                        *scram,
                    ),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
        for process in formatting:
            out, _ = process.communicate(timeout=120)
            if process.returncode != 0:
                raise RuntimeError(f"formatting Kafka storage failed: {out}")

    # -- processes ---------------------------------------------------------------

    def start(self, *, timeout: float = 120.0) -> KafkaCluster:
        self._format()
        for node in self.nodes:
            self._launch(node)
        self.wait_until_serving(timeout=timeout)
        return self

    def _launch(self, node: Node) -> None:
        if node.running:
            return
        self._write(node)  # the listener ports are fixed for the cluster's life
        out = open(node.directory / "stdout.log", "ab")
        node.process = subprocess.Popen(
            self._java(node, "kafka.Kafka", str(node.directory / "server.properties")),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        out.close()

    def wait_until_serving(self, *, timeout: float = 120.0) -> None:
        """Until every running node listens and the cluster answers metadata with all of them."""
        deadline = time.monotonic() + timeout
        running = [n for n in self.nodes if n.running]
        while True:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise RuntimeError(
                        f"Kafka node {node.id} exited with {node.process.returncode}; "
                        f"see {node.directory / 'server.log'}"
                    )
            if all(_listening(n.port) for n in running) and self._brokers_registered() >= len(running):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"Kafka did not start serving within {timeout:.0f} s; see {self.root}/node-*/server.log"
                )
            time.sleep(0.25)

    def _brokers_registered(self) -> int:
        """How many brokers the cluster's metadata lists (0 when nothing answers yet)."""

        async def count() -> int:
            running = [n for n in self.nodes if n.running and _listening(n.port)]
            if not running:
                return 0
            admin = AIOKafkaAdminClient(
                bootstrap_servers=",".join(f"127.0.0.1:{n.port}" for n in running),
                request_timeout_ms=3000,
                **client_options(),
            )  # the plain listener
            try:
                await admin.start()
                return len((await admin.describe_cluster())["brokers"])
            except Exception:
                return 0
            finally:
                await admin.close()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(count())
        # Called where an event loop runs: a loop of its own, on a thread.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(lambda: asyncio.run(count())).result()

    def stop_node(self, node_id: int, *, timeout: float = 60.0) -> None:
        """A clean shutdown of one node (leadership moves first), as a rolling restart does."""
        node = self.node(node_id)
        if node.process is not None:
            end_process(node.process, timeout=timeout)
        node.process = None

    def start_node(self, node_id: int, *, timeout: float = 120.0) -> None:
        """Start a stopped node with the data it had; return when it has rejoined."""
        self._launch(self.node(node_id))
        self.wait_until_serving(timeout=timeout)

    def stop(self) -> None:
        for node in self.nodes:  # every node told first: they shut down together
            if node.running:
                assert node.process is not None  # running: a process, still alive
                node.process.send_signal(signal.SIGCONT)
                node.process.terminate()
        for node in self.nodes:
            self.stop_node(node.id, timeout=30)
