"""Kill -9 the fulfilment service mid-stream and start it again: every request has exactly one assignment."""

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.fulfilment.models import assignments, hub_feed
from shared.bus import ensure_topics, free_port
from shared.db import Database
from shared.events import AssignmentRoutedV1
from tests.integration.fulfilment.conftest import eventually, produce, referral_received
from tests.support.kafka import read_topic

SERVICE = "fulfilment"
ROOT = Path(__file__).resolve().parents[3]


def start_service(settings, port: int) -> subprocess.Popen:
    """The service as `kent-together run` starts it: its own uvicorn process, configured by environment."""
    topics = settings.topics
    env = {
        **os.environ,
        "FULFILMENT_DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KT_JWT_SIGNING_KEY": settings.jwt_signing_key,
        "KT_VAR_DIR": str(settings.var_dir),
        "KT_LOG_LEVEL": "WARNING",
        "KT_TOPIC_REFERRALS": topics.referrals,
        "KT_TOPIC_REQUEST_STATS": topics.request_stats,
        "KT_TOPIC_ASSIGNMENT_STATUS": topics.assignment_status,
        "KT_TOPIC_HUBS": topics.hubs,
        "KT_TOPIC_DEAD_LETTER_PREFIX": topics.dead_letter_prefix,
        "FULFILMENT_CONSUMER_GROUP": settings.consumer_group,
        "FULFILMENT_CONSUMER_SESSION_TIMEOUT_MS": "6000",
        "FULFILMENT_CREATE_HUB_TOPICS": "false",
        "FULFILMENT_OUTBOX_POLL_SECONDS": "0.1",
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "services.fulfilment.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


async def test_a_service_killed_mid_stream_and_restarted_makes_exactly_one_assignment_per_request(
    settings,
    database_url,
):
    if database_url.startswith("sqlite"):
        pytest.skip("one database is enough for this slow test: PostgreSQL, as in production")
    referrals = [referral_received(types=("food", "prescription")) for _ in range(400)]
    requests = {str(r.request_id) for referral in referrals for r in referral.requests}
    await ensure_topics(settings.kafka_bootstrap_servers, {settings.topics.referrals: 3})
    await produce(
        settings.kafka_bootstrap_servers,
        settings.topics.referrals,
        *[r.envelope(source="/kent-together/referrals") for r in referrals],
    )
    db = Database(settings.database_url)

    async def made() -> int:
        async with db.sessions() as session:
            return await session.scalar(select(func.count()).select_from(assignments))

    service = start_service(settings, free_port())
    try:

        async def mid_stream():
            return await made() >= 60

        await eventually(mid_stream, timeout=60, interval=0.01)
        service.send_signal(signal.SIGKILL)
        service.wait()
        at_kill = await made()
        assert at_kill < len(requests), "finished before the kill: make the stream longer"

        service = start_service(settings, free_port())

        async def all_made():
            return await made() >= len(requests)

        await eventually(all_made, timeout=60, interval=0.1)
        await asyncio.sleep(0.5)
        async with db.sessions() as session:
            per_request = (
                await session.execute(select(assignments.c.request_id, func.count()).group_by(assignments.c.request_id))
            ).all()
            routed_in_feeds = await session.scalar(
                select(func.count()).select_from(hub_feed).where(hub_feed.c.type == AssignmentRoutedV1.type)
            )
            at_hubs = await session.scalar(select(func.count()).where(assignments.c.hub.is_not(None)))
    finally:
        service.send_signal(signal.SIGKILL)
        service.wait()
        await db.dispose()

    assert {request_id for request_id, _ in per_request} == requests
    assert all(count == 1 for _, count in per_request)
    assert routed_in_feeds == at_hubs == len(requests)  # each hub heard of each request once
    on_topic = await read_topic(settings.kafka_bootstrap_servers, settings.topics.hub("thanet"))
    by_assignment: dict[str, set] = {}
    for _, event in on_topic:
        by_assignment.setdefault(event.data["assignment_id"], set()).add(event.id)
    # A relay killed between sending and marking may send an event again, under the same id.
    assert all(len(ids) == 1 for ids in by_assignment.values())
