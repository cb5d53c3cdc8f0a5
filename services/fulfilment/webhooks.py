"""Webhooks: each hub feed entry POSTed to the hub's URL, signed, retried with back-off, logged.

A delivery row is written with its feed entry, in the same transaction, so
nothing committed is ever left unsent. The body is the CloudEvent exactly as on
the hub's topic. Headers:

    Content-Type: application/cloudevents+json
    webhook-id: <delivery id>                      (Standard Webhooks: the same on every retry)
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256 of "<webhook-id>.<timestamp>.<body>">
    X-Kent-Together-Delivery: <delivery id>        (the same on every retry)
    X-Kent-Together-Feed-Seq: <the entry's place in the hub's feed>
    X-Kent-Together-Timestamp: <unix seconds>
    X-Kent-Together-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the hub's secret>

The `webhook-*` headers are Standard Webhooks (standard-webhooks.com), so a hub
verifies with that project's library in its own language: given the secret as
set if it is a `whsec_…` one, else `whsec_` + base64 of the secret's UTF-8
bytes. The `X-Kent-Together-*` signature is kept for one release beside it, for
receivers written against it; then it goes.

A hub verifies the signature, rejects old timestamps (replays), and dedupes by
the event id. Retries can reorder deliveries: the feed seq says where each
belongs, and the pull feed fills any gap.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from datetime import timedelta

import httpx
import orjson
from sqlalchemy import select, update

from services.fulfilment.models import hub_feed, hubs, webhook_deliveries
from shared import tracing
from shared.db import Database
from shared.lifecycle import StopsBetweenRounds
from shared.tracing import Tracing, instrument_http_client
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)


def sign(secret: str, *, timestamp: str, body: bytes) -> str:
    """The signature header's value for a body sent at `timestamp`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def standard_signing_key(secret: str) -> bytes:
    """The HMAC key of the Standard Webhooks signature: a `whsec_` secret's base64, else the secret's bytes."""
    if secret.startswith("whsec_"):
        return base64.b64decode(secret[len("whsec_") :] + "==")
    return secret.encode()


def standard_signature(secret: str, *, msg_id: str, timestamp: str, body: bytes) -> str:
    """The `webhook-signature` value (Standard Webhooks v1, symmetric)."""
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(standard_signing_key(secret), signed, hashlib.sha256).digest()).decode()


def verify(secret: str, *, timestamp: str, body: bytes, signature: str) -> bool:
    """What a hub's receiver does (and the tests do) to trust a delivery."""
    return hmac.compare_digest(sign(secret, timestamp=timestamp, body=body), signature)


def backoff(attempts: int, *, base_seconds: float, cap_seconds: float = 3600.0) -> timedelta:
    """Wait before the next try after `attempts` failures: base, 2×base, 4×base… up to an hour."""
    return timedelta(seconds=min(cap_seconds, base_seconds * 2 ** max(0, attempts - 1)))


class WebhookDispatcher(StopsBetweenRounds):
    """Sends due deliveries; several instances share the work without sending one twice at once."""

    def __init__(
        self,
        *,
        db: Database,
        uow_factory,
        poll_seconds: float = 1.0,
        max_attempts: int = 8,
        backoff_seconds: float = 5.0,
        timeout_seconds: float = 10.0,
        batch: int = 50,
        tracing: Tracing | None = None,
    ):
        self.db = db
        self.uow_factory = uow_factory
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.batch = batch
        self.lease = timedelta(seconds=timeout_seconds * 3)
        self.tracing = tracing
        """Each delivery is a client span of its event's trace; the hub's server gets its `traceparent`."""

    async def run(self) -> None:
        self.started()
        async with httpx.AsyncClient(timeout=self.timeout_seconds) as client:
            if self.tracing is not None:
                instrument_http_client(client, self.tracing)
            while True:
                try:
                    with self.working():  # a stop lets the deliveries in hand be sent and recorded
                        sent = await self.deliver_due(client)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    if asyncio.current_task().cancelling():
                        raise  # a cancellation the driver turned into another error: stop all the same
                    log.warning("webhooks: a round failed; trying again", exc_info=True)
                    sent = 0
                if sent < self.batch:
                    await asyncio.sleep(self.poll_seconds)

    async def deliver_due(self, client: httpx.AsyncClient) -> int:
        """Claim the deliveries that are due, send them, record each result; return how many were tried."""
        claimed = await self._claim()
        if claimed:
            await asyncio.gather(*[self._send(client, delivery) for delivery in claimed])
        return len(claimed)

    async def _claim(self) -> list:
        d = webhook_deliveries.c
        uow = self.uow_factory()
        async with uow:
            now = uow.now()
            query = (
                select(webhook_deliveries, hub_feed.c.event, hubs.c.webhook_secret)
                .join(hub_feed, (hub_feed.c.hub == d.hub) & (hub_feed.c.seq == d.feed_seq))
                .join(hubs, hubs.c.slug == d.hub)
                .where(d.status == "pending", d.next_attempt_at <= now)
                .order_by(d.next_attempt_at, d.id)
                .limit(self.batch)
            )
            if self.db.dialect == "postgresql":
                query = query.with_for_update(of=webhook_deliveries, skip_locked=True)
            rows = (await uow.session.execute(query)).mappings().all()
            claimed = []
            for row in rows:
                # A lease, not a lock held over the network call: the row is ours until
                # it runs out, and an instance that dies mid-send leaves it to be retried.
                result = await uow.session.execute(
                    update(webhook_deliveries)
                    .where(d.id == row["id"], d.status == "pending", d.next_attempt_at <= now)
                    .values(next_attempt_at=now + self.lease, attempts=d.attempts + 1, last_attempt_at=now)
                )
                if result.rowcount == 1:  # the feed entry is sealed at rest: opened only to be sent
                    claimed.append({**row, "event": uow.keyring.open(row["event"]), "attempts": row["attempts"] + 1})
            await uow.commit()
            return claimed

    async def _send(self, client: httpx.AsyncClient, delivery: dict) -> None:
        body = delivery["event"]
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/cloudevents+json",
            "X-Kent-Together-Delivery": str(delivery["id"]),
            "X-Kent-Together-Feed-Seq": str(delivery["feed_seq"]),
            "X-Kent-Together-Timestamp": timestamp,
            "webhook-id": str(delivery["id"]),
            "webhook-timestamp": timestamp,
        }
        if delivery["webhook_secret"]:
            secret = delivery["webhook_secret"]
            headers["webhook-signature"] = standard_signature(
                secret, msg_id=headers["webhook-id"], timestamp=timestamp, body=body
            )
            headers["X-Kent-Together-Signature"] = sign(secret, timestamp=timestamp, body=body)
        status_code, error = None, None
        event = orjson.loads(body)
        try:
            with tracing.within(event.get(tracing.HEADER), event.get(tracing.STATE_HEADER)):
                response = await client.post(delivery["url"], content=body, headers=headers)
            status_code = response.status_code
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"[:500]
        await self._record(delivery, status_code=status_code, error=error)

    async def _record(self, delivery: dict, *, status_code: int | None, error: str | None) -> None:
        uow = self.uow_factory()
        async with uow:
            now = uow.now()
            values: dict = {"last_status_code": status_code, "last_error": error}
            if error is None:
                values.update(status="delivered", delivered_at=now)
            elif delivery["attempts"] >= self.max_attempts:
                values.update(status="failed")
                log.warning(
                    "webhook delivery %s to hub %s failed %d times; giving up: %s",
                    delivery["id"],
                    delivery["hub"],
                    delivery["attempts"],
                    error,
                )
            else:
                values.update(next_attempt_at=now + backoff(delivery["attempts"], base_seconds=self.backoff_seconds))
            await uow.session.execute(
                update(webhook_deliveries).where(webhook_deliveries.c.id == delivery["id"]).values(**values)
            )
            await uow.commit()


async def delivery_log(uow: UnitOfWork, *, hub: str, status: str | None = None, limit: int = 100) -> list[dict]:
    query = select(webhook_deliveries).where(webhook_deliveries.c.hub == hub)
    if status:
        query = query.where(webhook_deliveries.c.status == status)
    async with uow:
        rows = await uow.session.execute(query.order_by(webhook_deliveries.c.id.desc()).limit(limit))
        return [dict(r) for r in rows.mappings()]
