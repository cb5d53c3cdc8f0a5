"""Consuming events: an inbox makes redelivery harmless; offsets commit after the database.

Each message is handled in a unit of work that also records its event id in
the inbox, so a message delivered twice changes nothing the second time. The
messages of one fetch from a partition share one transaction (one commit for
many events; with a batch handler, those of every partition in the fetch do);
if any of them fails, that transaction is rolled back and they
are handled again one at a time, so one bad message never holds back or
spoils the others. A message that keeps failing is retried a bounded number
of times, then sent to the dead-letter topic with the reason, and the
partition moves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy import Column, MetaData, String, Table, delete, insert, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import CursorResult

from shared import tracing
from shared.bus import OutgoingMessage, Producer
from shared.db import UtcDateTime, utcnow
from shared.events import REGISTRY, CloudEvent
from shared.kafka_security import KafkaSecurity, client_options, start_client
from shared.lifecycle import StopsBetweenRounds
from shared.logs import event_id_var
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)

Handler = Callable[[UnitOfWork, CloudEvent], Awaitable[None]]
BatchHandler = Callable[[UnitOfWork, list[CloudEvent]], Awaitable[None]]


class UnprocessableEvent(Exception):
    """An event no retry can help: dead-letter it at once."""


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(100), primary_key=True),
        Column("event_id", String(36), primary_key=True),
        Column("processed_at", UtcDateTime, nullable=False),
    )


class EventConsumer(StopsBetweenRounds):
    """One consumer group reading `topics` and calling a handler per event type."""

    def __init__(
        self,
        *,
        group_id: str,
        topics: list[str],
        handlers: dict[str, Handler],
        uow_factory: Callable[[], UnitOfWork],
        inbox: Table,
        bootstrap_servers: str,
        producer: Producer,
        dead_letter_topic: str,
        max_attempts: int = 5,
        retry_base_seconds: float = 0.2,
        session_timeout_ms: int = 10_000,
        batch_size: int = 200,
        batch_handler: BatchHandler | None = None,
        max_event_bytes: int = 512 * 1024,
        security: KafkaSecurity | None = None,
        inbox_retention: timedelta | None = None,
        fetch_max_wait_ms: int = 20,
    ):
        self.group_id = group_id
        self.fetch_max_wait_ms = fetch_max_wait_ms
        """How long a fetch waits for data. The embedded broker (tansu) answers only when the wait is over, not
        when data arrives, so this is each hop's latency floor there: 20 ms, not 100 (a resident's request crosses
        two consumers on its way to a hub). Apache Kafka answers as soon as data comes, whatever the wait."""
        self.inbox_retention = inbox_retention
        """Handled ids older than this are purged now and then (None: kept); see ServiceSettings.inbox_retention_days."""
        self._last_inbox_purge: float | None = None
        self.security = security
        """TLS and SASL (shared/kafka_security.py); None is PLAINTEXT."""
        self.batch_handler = batch_handler
        """Optional: takes the new events of a fetch at once, in its transaction, instead of `handlers` one by one."""
        self.topics = topics
        self.handlers = handlers
        self.uow_factory = uow_factory
        self.inbox = inbox
        self.bootstrap_servers = bootstrap_servers
        self.producer = producer
        self.dead_letter_topic = dead_letter_topic
        self.max_attempts = max_attempts
        self.retry_base_seconds = retry_base_seconds
        self.session_timeout_ms = session_timeout_ms
        self.batch_size = batch_size
        self.max_event_bytes = max_event_bytes
        self.processed_total = 0
        self.dead_lettered_total = 0
        self._consumer: AIOKafkaConsumer | None = None
        self.tracing: tracing.Tracing | None = None
        """The service's tracer: each event is handled in a consumer span (else only its trace is continued)."""

    def _traced(self, event: CloudEvent, message: ConsumerRecord) -> AbstractContextManager[object]:
        return _consumer_span(self, event, message)

    async def lag(self) -> int:
        """Messages on the assigned partitions not yet handled (0 when not connected)."""
        consumer = self._consumer
        if consumer is None:
            return 0
        total = 0
        for partition in consumer.assignment():
            end = consumer.highwater(partition)
            if end is not None:
                total += max(0, end - await consumer.position(partition))
        return total

    async def run(self) -> None:
        """Consume until stopped or cancelled; reconnect with back-off when the broker is away."""
        self.started()
        backoff = 0.0
        while True:
            consumer = AIOKafkaConsumer(
                *self.topics,
                bootstrap_servers=self.bootstrap_servers,
                group_id=self.group_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                max_poll_records=500,
                metadata_max_age_ms=5000,  # pick up topics created after start-up
                session_timeout_ms=self.session_timeout_ms,
                # The embedded broker answers a fetch only when its wait is over, not
                # when data arrives: keep the wait short so events flow in milliseconds.
                fetch_max_wait_ms=self.fetch_max_wait_ms,
                heartbeat_interval_ms=max(100, self.session_timeout_ms // 4),
                **client_options(self.security),
            )
            handled: dict[
                TopicPartition, int
            ] = {}  # partition → offset after the last message whose database commit is done
            try:
                await start_client(consumer, bootstrap_servers=self.bootstrap_servers, security=self.security)
                self._consumer = consumer
                backoff = 0.0
                while True:
                    with self.working():
                        await self._purge_inbox_now_and_then()
                    batches = await consumer.getmany(timeout_ms=500)
                    if not batches:
                        continue
                    with self.working():  # a stop lets the fetch in hand finish, offsets committed
                        if self.batch_handler is not None and len(batches) > 1:
                            await self._process_fetch(consumer, batches, handled)
                            continue
                        for partition, messages in batches.items():
                            await self._process_partition(partition, messages, handled)
                            # Only now, after every database commit of this batch.
                            await consumer.commit({partition: handled.pop(partition)})
            except asyncio.CancelledError:
                # Stopping mid-batch (SIGTERM, a deploy): hand back the rest of the batch,
                # but commit what was handled, so the next owner starts right after it.
                await self._commit_handled(consumer, handled)
                raise
            except Exception as error:
                backoff = min(max(0.5, backoff * 2), 30.0)
                log.warning("consumer %s: %s; reconnecting in %.1fs", self.group_id, error, backoff)
                await asyncio.sleep(backoff)
            finally:
                self._consumer = None
                try:
                    await asyncio.wait_for(consumer.stop(), timeout=10)
                except Exception:
                    log.debug("consumer stop failed", exc_info=True)

    async def purge_inbox(self, *, now: datetime | None = None) -> int:
        """Forget this consumer's handled ids older than the inbox retention; return how many."""
        if self.inbox_retention is None:
            return 0
        cutoff = (now or utcnow()) - self.inbox_retention
        async with self.uow_factory() as uow:
            result = await uow.session.execute(
                delete(self.inbox).where(self.inbox.c.consumer == self.group_id, self.inbox.c.processed_at < cutoff)
            )
            await uow.commit()
        return cast("CursorResult[Any]", result).rowcount or 0

    async def _purge_inbox_now_and_then(self) -> None:
        """At start, then every ten minutes: the inbox stays the size of its retention, not of all time."""
        if self.inbox_retention is None:
            return
        now = asyncio.get_running_loop().time()
        if self._last_inbox_purge is not None and now - self._last_inbox_purge < 600:
            return
        self._last_inbox_purge = now
        try:
            purged = await self.purge_inbox()
            if purged:
                log.info("consumer %s: forgot %d handled event ids past the inbox retention", self.group_id, purged)
        except Exception:
            log.warning("consumer %s: inbox purge failed; will try again", self.group_id, exc_info=True)

    async def _process_fetch(
        self,
        consumer: AIOKafkaConsumer,
        batches: dict[TopicPartition, list[ConsumerRecord]],
        handled: dict[TopicPartition, int],
    ) -> None:
        """A batch handler takes a whole fetch at once, every partition in it (each in its order).

        One transaction per fetch, not per partition: a fetch of 500 over 12
        partitions was 12 transactions of about 40 events each.
        """
        work = [(partition, message) for partition, messages in batches.items() for message in messages]
        for start in range(0, len(work), self.batch_size):
            chunk = work[start : start + self.batch_size]
            await self.process_many([message for _, message in chunk])
            for partition, message in chunk:
                handled[partition] = message.offset + 1
        # Only now, after every database commit of this fetch; then forget them, so a
        # partition since given to another instance is never committed again from here.
        await consumer.commit(dict(handled))
        handled.clear()

    async def _process_partition(
        self, partition: TopicPartition, messages: list[ConsumerRecord], handled: dict[TopicPartition, int]
    ) -> None:
        """One partition's messages of a fetch, in order, a transaction per `batch_size`."""
        for start in range(0, len(messages), self.batch_size):
            chunk = messages[start : start + self.batch_size]
            await self.process_many(chunk)
            handled[partition] = chunk[-1].offset + 1

    async def _commit_handled(self, consumer: AIOKafkaConsumer, handled: dict[TopicPartition, int]) -> None:
        if not handled:
            return
        try:
            async with asyncio.timeout(5):
                await consumer.commit(handled)
        except Exception as error:  # the inbox makes the redelivery of these harmless
            log.warning("consumer %s: could not commit on stop (%s); they will be redelivered", self.group_id, error)

    async def process_many(self, messages: list[ConsumerRecord]) -> None:
        """Handle a partition's messages in order, in one transaction.

        If one fails, those before it are committed together, it is handled on
        its own (retried, or dead-lettered), and those after it go on together.
        """
        if len(messages) == 1 and self.batch_handler is None:
            return await self.process(messages[0])
        work: list[tuple[int, CloudEvent, Handler]] = []
        for index, message in enumerate(messages):
            if message.value is None or len(message.value) > self.max_event_bytes:
                return await self._around(messages, index)
            try:
                event = CloudEvent.from_bytes(message.value)
            except (ValidationError, ValueError):
                return await self._around(messages, index)
            handler = self.handlers.get(event.type)
            if handler is None and event.type not in REGISTRY:
                return await self._around(messages, index)
            if handler is not None:
                work.append((index, event, handler))
        try:
            await self._handle_together(messages, work)
        except asyncio.CancelledError:
            raise
        except _BatchFailed as failure:
            log.info(
                "consumer %s: event %s failed in a batch (%r); handling it on its own",
                self.group_id,
                messages[failure.index].offset,
                failure.__cause__,
            )
            return await self._around(messages, failure.index, tried=True)
        except Exception as error:  # the commit itself failed: one at a time, each retried
            log.info(
                "consumer %s: a batch of %d failed (%r); handling them one at a time",
                self.group_id,
                len(messages),
                error,
            )
            for message in messages:
                await self.process(message)
            return
        self.processed_total += len(work)

    async def _around(self, messages: list[ConsumerRecord], index: int, *, tried: bool = False) -> None:
        """The messages before `index` together, the one at `index` alone, the rest together."""
        if index:
            await self.process_many(messages[:index])
        await self.process(messages[index], first_attempt=2 if tried else 1)
        if index + 1 < len(messages):
            await self.process_many(messages[index + 1 :])

    async def _handle_together(
        self, messages: list[ConsumerRecord], work: list[tuple[int, CloudEvent, Handler]]
    ) -> None:
        if not work:
            return
        async with self.uow_factory() as uow:
            recorded = await self._record_new(uow, list(dict.fromkeys(str(e.id) for _, e, _ in work)))
            if self.batch_handler is not None:
                fresh = list({str(e.id): e for _, e, _ in work if str(e.id) in recorded}.values())
                if fresh:
                    # Each event's consumer span (in its own trace) covers the transaction that handled it.
                    with contextlib.ExitStack() as spans:
                        if self.tracing is not None and self.tracing.exporting:
                            for index, event, _ in work:
                                if str(event.id) in recorded:
                                    spans.enter_context(self._traced(event, messages[index]))
                        await self.batch_handler(uow, fresh)  # a failure: handled one at a time after all
                        await uow.commit()
                return
            for index, event, handler in work:
                event_id = str(event.id)
                if event_id not in recorded:
                    continue  # handled before, or earlier in this batch
                recorded.discard(event_id)
                message = messages[index]
                try:
                    with self._traced(event, message), _handling(event_id):
                        await handler(uow, event)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    raise _BatchFailed(index) from error
            await uow.commit()

    async def _record_new(self, uow: UnitOfWork, event_ids: list[str]) -> set[str]:
        """Record the ids in the inbox; return those that were not there (the events to handle).

        One statement: a SELECT ... IN first cost a second round trip, and on
        PostgreSQL its cached plan, made while the inbox was small, came to scan
        the whole consumer's inbox.
        """
        insert_new = (pg_insert if uow.db.dialect == "postgresql" else sqlite_insert)(self.inbox)
        now = uow.now()
        return set(
            await uow.session.scalars(
                insert_new.on_conflict_do_nothing().returning(self.inbox.c.event_id),
                [{"consumer": self.group_id, "event_id": event_id, "processed_at": now} for event_id in event_ids],
            )
        )

    async def process(self, message: ConsumerRecord, *, first_attempt: int = 1) -> None:
        """Handle one Kafka message exactly once in effect, or dead-letter it."""
        size = len(message.value or b"")
        if message.value is None:
            await self.dead_letter(message, reason="not a CloudEvent: the message has no value")
            return
        if size > self.max_event_bytes:
            # No event of ours is near this size: parsing it would only cost memory.
            await self.dead_letter(
                message, reason=f"too large: {size} bytes, over the {self.max_event_bytes} this consumer takes"
            )
            return
        try:
            event = CloudEvent.from_bytes(message.value)
        except (ValidationError, ValueError) as error:
            await self.dead_letter(message, reason=f"not a CloudEvent: {_short(error)}")
            return
        handler = self.handlers.get(event.type)
        if handler is None:
            if event.type not in REGISTRY:
                await self.dead_letter(message, reason=f"unknown event type {event.type!r}")
            return  # a known type this consumer has no use for
        with self._traced(event, message), _handling(str(event.id)):
            await self._process_with_retries(message, event, handler, first_attempt=first_attempt)

    async def _process_with_retries(
        self, message: ConsumerRecord, event: CloudEvent, handler: Handler, *, first_attempt: int
    ) -> None:
        last_error: Exception | None = None
        for attempt in range(min(first_attempt, self.max_attempts), self.max_attempts + 1):
            try:
                await self._handle_once(event, handler)
                self.processed_total += 1
                return
            except UnprocessableEvent as error:
                await self.dead_letter(message, reason=str(error))
                return
            except ValidationError as error:
                await self.dead_letter(message, reason=f"invalid {event.type} data: {_short(error)}")
                return
            except asyncio.CancelledError:
                raise
            except Exception as error:
                last_error = error
                log.warning(
                    "consumer %s: event %s failed (attempt %d/%d): %r",
                    self.group_id,
                    event.id,
                    attempt,
                    self.max_attempts,
                    error,
                )
                if attempt < self.max_attempts:
                    await asyncio.sleep(self.retry_base_seconds * 2 ** (attempt - 1))
        await self.dead_letter(
            message, reason=f"failed {self.max_attempts} times: {type(last_error).__name__}: {last_error}"
        )

    async def _handle_once(self, event: CloudEvent, handler: Handler) -> None:
        event_id = str(event.id)
        async with self.uow_factory() as uow:
            seen = await uow.session.scalar(
                select(self.inbox.c.event_id).where(
                    self.inbox.c.consumer == self.group_id, self.inbox.c.event_id == event_id
                )
            )
            if seen:
                return
            await uow.session.execute(
                insert(self.inbox).values(consumer=self.group_id, event_id=event_id, processed_at=uow.now())
            )
            await handler(uow, event)
            await uow.commit()

    async def dead_letter(self, message: ConsumerRecord, *, reason: str) -> None:
        """Park a message with its reason; raises if the broker will not take it (then it is redelivered)."""
        log.error(
            "consumer %s: dead-lettering %s[%s]@%s: %s",
            self.group_id,
            message.topic,
            message.partition,
            message.offset,
            reason,
        )
        headers = tuple(message.headers or ()) + (
            ("dlq-reason", reason.encode()[:2000]),
            ("dlq-topic", message.topic.encode()),
            ("dlq-partition", str(message.partition).encode()),
            ("dlq-offset", str(message.offset).encode()),
            ("dlq-consumer", self.group_id.encode()),
        )
        value = message.value or b""
        if len(value) > self.max_event_bytes:
            # Might not fit on the dead-letter topic, and a failed send would stop the partition:
            # park where it is instead; the source topic still holds it at dlq-offset.
            headers += (("dlq-value-omitted-bytes", str(len(value)).encode()),)
            value = b""
        await self.producer.send_many(
            [OutgoingMessage(topic=self.dead_letter_topic, key=message.key, value=value, headers=headers)]
        )
        self.dead_lettered_total += 1


def _consumer_span(
    consumer: EventConsumer, event: CloudEvent, message: ConsumerRecord
) -> AbstractContextManager[object]:
    traceparent = event.traceparent or _header(message, tracing.HEADER)
    tracestate = event.tracestate or _header(message, tracing.STATE_HEADER)
    if consumer.tracing is None:
        return tracing.continued(traceparent, tracestate)
    return consumer.tracing.span(
        f"{message.topic} process",
        kind=tracing.SpanKind.CONSUMER,
        traceparent=traceparent,
        tracestate=tracestate,
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.destination.name": message.topic,
            "messaging.consumer.group.name": consumer.group_id,
            "messaging.destination.partition.id": str(message.partition),
            "messaging.kafka.offset": message.offset,
            "messaging.message.id": str(event.id),
            "cloudevents.event_id": str(event.id),
            "cloudevents.event_type": event.type,
        },
    )


def _header(message: ConsumerRecord, name: str) -> bytes | None:
    return next((value for key, value in (message.headers or ()) if key == name), None)


@contextlib.contextmanager
def _handling(event_id: str) -> Iterator[None]:
    """Log lines written while handling an event carry its id."""
    token = event_id_var.set(event_id)
    try:
        yield
    finally:
        event_id_var.reset(token)


class _BatchFailed(Exception):
    def __init__(self, index: int):
        super().__init__(index)
        self.index = index


def _short(error: Exception) -> str:
    return str(error).splitlines()[0][:300]
