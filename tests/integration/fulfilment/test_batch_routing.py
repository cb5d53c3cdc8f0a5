"""A fetched batch of referral events is routed in one transaction, in its order, with nothing lost or doubled."""

import uuid
from datetime import UTC, datetime

from aiokafka.structs import ConsumerRecord
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy import select

from services.fulfilment.app import create_app
from services.fulfilment.handlers import referral_batch, referral_handlers
from services.fulfilment.hubs import KENT_HUBS
from services.fulfilment.models import assignments, hub_feed
from shared.events import CloudEvent, RequestCancelledV1
from tests.integration.fulfilment.conftest import CANTERBURY_POSTCODE, referral_received
from tests.support.apps import running

SERVICE = "fulfilment"
SOURCE = "/kent-together/referrals"


def batch_consumer(app):
    runtime, settings = app.state.runtime, app.state.runtime.settings
    return runtime.consumer(
        group=settings.consumer_group,
        topics=[settings.topics.referrals],
        handlers=referral_handlers(routing=app.state.routing, topics=settings.topics),
        batch_handler=referral_batch(routing=app.state.routing, topics=settings.topics),
    )


def records(topic: str, events: list[CloudEvent | bytes]) -> list[ConsumerRecord]:
    out = []
    for offset, event in enumerate(events):
        value = event if isinstance(event, bytes) else event.to_bytes()
        key = b"k" if isinstance(event, bytes) else event.subject.encode()
        out.append(
            ConsumerRecord(
                topic=topic,
                partition=0,
                offset=offset,
                timestamp=0,
                timestamp_type=0,
                key=key,
                value=value,
                checksum=None,
                serialized_key_size=len(key),
                serialized_value_size=len(value),
                headers=(),
            )
        )
    return out


async def stored(app):
    async with app.state.runtime.db.sessions() as session:
        rows = (await session.execute(select(assignments.c.request_id, assignments.c.status, assignments.c.hub))).all()
        feed = (
            await session.execute(select(hub_feed.c.hub, hub_feed.c.seq).order_by(hub_feed.c.hub, hub_feed.c.seq))
        ).all()
    return {r.request_id: (r.status, r.hub) for r in rows}, feed


async def test_a_batch_routes_every_request_once_in_order_and_numbers_each_hubs_feed_without_gaps(client, settings):
    thanet = [referral_received(types=("food", "prescription")) for _ in range(3)]
    canterbury = referral_received(postcode=CANTERBURY_POSTCODE, types=("befriending", "food"))
    cancelled = RequestCancelledV1(
        referral_id=canterbury.referral_id,
        request_id=canterbury.requests[0].request_id,
        request_type="befriending",
        reason="no-longer-needed",
        cancelled_at=datetime.now(UTC),
    )
    events = [r.envelope(source=SOURCE) for r in thanet] + [canterbury.envelope(source=SOURCE)]
    # The first referral again under a new event id (a republish), and a cancellation that must follow its referral.
    events += [thanet[0].envelope(source=SOURCE), cancelled.envelope(source=SOURCE)]
    consumer = batch_consumer(client.app)

    await consumer.process_many(records(settings.topics.referrals, events))

    assert consumer.processed_total == len(events) and consumer.dead_lettered_total == 0
    by_request, feed = await stored(client.app)
    assert len(by_request) == 8  # 3 × 2 in Thanet, 2 in Canterbury: the republished copy made none
    assert by_request[str(canterbury.requests[0].request_id)] == ("cancelled", "canterbury")
    assert by_request[str(canterbury.requests[1].request_id)] == ("routed", "canterbury")
    assert all(by_request[str(q.request_id)] == ("routed", "thanet") for r in thanet for q in r.requests)
    thanet_seqs = [seq for hub, seq in feed if hub == "thanet"]
    canterbury_seqs = [seq for hub, seq in feed if hub == "canterbury"]
    assert thanet_seqs == list(range(1, 7))
    assert canterbury_seqs == [1, 2, 3]  # routed twice, then the withdrawal of the cancelled one


async def test_one_bad_event_in_a_batch_is_dead_lettered_and_the_rest_are_routed(client, settings):
    good = [referral_received(types=("food",)) for _ in range(2)]
    bad = referral_received(types=("food",)).envelope(source=SOURCE)
    bad.data["requests"] = "not a list"  # fails the contract: no retry can help it
    consumer = batch_consumer(client.app)
    sent = []

    async def parked(message, *, reason):
        sent.append((message.offset, reason))
        consumer.dead_lettered_total += 1

    consumer.dead_letter = parked

    await consumer.process_many(
        records(settings.topics.referrals, [good[0].envelope(source=SOURCE), bad, good[1].envelope(source=SOURCE)])
    )

    by_request, _ = await stored(client.app)
    assert set(by_request) == {str(r.requests[0].request_id) for r in good}
    assert [offset for offset, _ in sent] == [1] and "invalid" in sent[0][1]
    assert uuid.UUID(str(bad.id))  # the bad one's id is in no assignment: parked, not half-routed


async def test_a_batchs_statements_do_not_grow_with_its_referrals_or_hubs(settings, directory):
    """One feed-counter update for every hub, one read of the hubs' email addresses for every today request,
    every row inserted in one go: a batch of 12 referrals to 4 hubs sends what a batch of 2 to one hub sends."""
    quiet = dict(run_consumers=False, run_relay=False, run_scheduler=False, run_webhooks=False, run_notifications=False)
    app = create_app(settings.model_copy(update=quiet), directory=directory)
    async with running(app):
        statements = await statements_of_two_batches(app, settings, directory)
        by_request, feed = await stored(app)
    assert len(by_request) == 2 + 2 * 2 + 12 * 2
    assert {hub for hub, _ in feed} == {hub.slug for hub in KENT_HUBS[:4]} | {"thanet"}
    assert len(statements["large"]) == len(statements["small"]), "\n".join(statements["large"])
    assert sum(s.lstrip().upper().startswith("UPDATE FEED_HEADS") for s in statements["large"]) == 1
    assert sum("email" in s and "FROM hubs" in s for s in statements["large"]) == 1


async def statements_of_two_batches(app, settings, directory) -> dict[str, list[str]]:
    """What the database was sent for a batch of 2 referrals to one hub, and for one of 12 to four hubs."""
    consumer = batch_consumer(app)
    engine = app.state.runtime.db.engine.sync_engine
    sent: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        sent.append(statement)

    def batch(postcodes):
        return [referral_received(postcode=p, types=("food", "prescription"), urgency="today") for p in postcodes]

    four_hubs = [directory.postcodes(district_code=hub.district_code)[0] for hub in KENT_HUBS[:4]]
    await consumer.process_many(
        records(settings.topics.referrals, [r.envelope(source=SOURCE) for r in batch(["CT9 2RN"])])
    )
    statements = {}
    for name, postcodes in (("small", ["CT9 2RN"] * 2), ("large", four_hubs * 3)):
        sent.clear()
        sqlalchemy_event.listen(engine, "before_cursor_execute", count)
        try:
            await consumer.process_many(
                records(settings.topics.referrals, [r.envelope(source=SOURCE) for r in batch(postcodes)])
            )
        finally:
            sqlalchemy_event.remove(engine, "before_cursor_execute", count)
        statements[name] = list(sent)
    assert consumer.dead_lettered_total == 0
    return statements
