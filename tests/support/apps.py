"""Build a service app the way production does, with a test's database, broker and topics."""

from __future__ import annotations

import contextlib

import httpx

from shared.auth import mint_token
from shared.settings import Topics


def test_topics(unique: str) -> Topics:
    return Topics(
        referrals=f"test.referrals.{unique}",
        request_stats=f"test.stats.{unique}",
        dead_letter_prefix=f"test.dlq.{unique}.",
        actions=f"test.actions.{unique}",
        assignment_status=f"test.status.{unique}",
        hubs=f"test.hub.{unique}.{{hub}}",
    )


def token(
    settings, role: str, *, hub: str | None = None, subject: str | None = None, name: str | None = None
) -> dict[str, str]:
    """An Authorization header for `role`, signed with the test's key (`name`: the person's `name` claim)."""
    value = mint_token(
        signing_key=settings.signing_key(),
        role=role,
        hub=hub,
        subject=subject,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        name=name,
    )
    return {"Authorization": f"Bearer {value}"}


@contextlib.asynccontextmanager
async def running(app):
    """The app with its lifespan running (relay, consumers), and an HTTP client to it."""
    async with app.router.lifespan_context(app):
        # As a real server: an unhandled error is a 500 problem response, not an exception here.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def record_of(topic: str, event, *, offset: int = 0):
    """A CloudEvent as a consumer fetches it from `topic` (keyed by its subject), to hand to `EventConsumer.process`."""
    from aiokafka.structs import ConsumerRecord

    value = event.to_bytes()
    return ConsumerRecord(
        topic=topic,
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=event.subject.encode(),
        value=value,
        checksum=None,
        serialized_key_size=len(event.subject),
        serialized_value_size=len(value),
        headers=(),
    )
