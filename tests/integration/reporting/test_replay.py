"""`kent-together replay` never destroys figures: refused when the topics hold less, all or nothing when it runs."""

from datetime import timedelta

import pytest

from services.reporting.app import consumed_topics
from services.reporting.service import ReplayRefused, replay
from shared.bus import OutgoingMessage, Producer, ensure_topics
from tests.integration.reporting.conftest import Story, by, deliver, figure

SERVICE = "reporting"


async def on_topic(settings, *events) -> None:
    """The events on the reporting topics, as the producing services' relays put them there."""
    producer = Producer(settings.kafka_bootstrap_servers)
    try:
        await producer.send_many(
            [
                OutgoingMessage(topic=settings.topics.request_stats, key=event.subject.encode(), value=event.to_bytes())
                for event in events
            ]
        )
    finally:
        await producer.stop()


async def run_replay(client, settings, **options) -> int:
    runtime = client.app.state.runtime
    return await replay(
        runtime.uow,
        inbox=runtime.tables.inbox,
        consumer=settings.consumer_group,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        topics=consumed_topics(settings),
        **options,
    )


@pytest.fixture
async def three_requests_one_on_the_topics(client, settings):
    await ensure_topics(settings.kafka_bootstrap_servers, {topic: 1 for topic in consumed_topics(settings)})
    stories = [Story(request_type=kind) for kind in ("food", "food", "prescription")]
    events = await deliver(client.app, *(story.received() for story in stories))
    await on_topic(settings, events[0])  # the others were lost with the broker
    return stories


async def test_a_replay_from_topics_holding_less_than_the_figures_is_refused_and_changes_nothing(
    client,
    settings,
    three_requests_one_on_the_topics,
):
    with pytest.raises(ReplayRefused, match=r"requests: 1 rebuilt, 3 held now.*kent-together republish"):
        await run_replay(client, settings)
    assert by((await figure(client, settings, "requests", group_by="type"))["rows"], "type") == {
        "food": 2,
        "prescription": 1,
    }


async def test_a_forced_replay_rebuilds_from_what_the_topics_hold(client, settings, three_requests_one_on_the_topics):
    assert await run_replay(client, settings, force=True) == 1
    assert by((await figure(client, settings, "requests", group_by="type"))["rows"], "type") == {"food": 1}


async def test_a_replay_that_fails_halfway_leaves_the_figures_as_they_were(client, settings):
    await ensure_topics(settings.kafka_bootstrap_servers, {topic: 1 for topic in consumed_topics(settings)})
    story = Story(request_type="befriending")
    events = await deliver(client.app, story.received(), story.status_changed("routed", after=timedelta(minutes=1)))
    await on_topic(settings, events[0])

    def broken(projected: int) -> None:
        raise RuntimeError("the replay's host went away")

    with pytest.raises(RuntimeError):
        await run_replay(client, settings, force=True, progress=broken)
    assert by((await figure(client, settings, "requests", group_by="status"))["rows"], "status") == {"routed": 1}
