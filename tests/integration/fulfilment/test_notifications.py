"""Hubs told through GOV.UK Notify: the real client against a local server speaking Notify's API.

The message is written in the transaction that routes the request (or records the escalation);
the worker sends it once, whatever happens to it or to Notify in between.
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from services.fulfilment.app import create_app
from services.fulfilment.models import notification_attempts, notifications
from shared.db import Database
from shared.events import AssignmentEscalatedV1
from tests.integration.fulfilment.conftest import (
    deliver,
    directory,
    eventually,
    headers,
    make_settings,
    referral_received,
)
from tests.support.apps import running
from tests.support.notify import API_KEY, SERVICE_ID, serving_notify

__all__ = ["directory"]

SERVICE = "fulfilment"
ROOT = Path(__file__).resolve().parents[3]
TODAY_TEMPLATE = str(uuid.uuid4())
ESCALATION_TEMPLATE = str(uuid.uuid4())
TEMPLATES = {"hub-today-request": TODAY_TEMPLATE, "hub-escalation": ESCALATION_TEMPLATE}
HUB_EMAIL = "thanet.hub@thanet.gov.uk"


@pytest.fixture
def notify():
    with serving_notify() as stand_in:
        yield stand_in


def notify_settings(settings, notify, **overrides):
    return settings.model_copy(
        update={
            "run_consumers": False,
            "notify_api_key": __import__("pydantic").SecretStr(API_KEY),
            "notify_base_url": notify.url,
            "notify_templates": TEMPLATES,
            "notify_poll_seconds": 0.05,
            "notify_backoff_seconds": 0.05,
            "notify_timeout_seconds": 2.0,
            **overrides,
        }
    )


@pytest.fixture
def settings(database_url, broker, signing_key, unique, var_dir):
    return make_settings(
        database_url=database_url, broker=broker, signing_key=signing_key, unique=unique, var_dir=var_dir
    )


async def fulfilment(settings, directory):
    app = create_app(settings, directory=directory)
    return app, running(app)


async def with_hub_email(client, settings, email=HUB_EMAIL):
    response = await client.patch("/v1/hubs/thanet", json={"email": email}, headers=headers(settings, "admin"))
    assert response.status_code == 200, response.text


def now_or_later(read):
    """A check for `eventually` of something this process holds (the stand-in's records, a file)."""

    async def check():
        return read()

    return check


async def messages(db_url: str) -> list[dict]:
    db = Database(db_url)
    try:
        async with db.sessions() as session:
            rows = (await session.execute(select(notifications).order_by(notifications.c.id))).mappings().all()
            tries = (
                (await session.execute(select(notification_attempts).order_by(notification_attempts.c.id)))
                .mappings()
                .all()
            )
        return [{**row, "log": [t["outcome"] for t in tries if t["notification_id"] == row["id"]]} for row in rows]
    finally:
        await db.dispose()


async def test_a_today_request_is_emailed_to_its_hub_once_with_a_signed_token(settings, directory, notify):
    app = create_app(notify_settings(settings, notify), directory=directory)
    async with running(app) as client:
        await with_hub_email(client, settings)
        await deliver(app, referral_received(types=("food",), urgency="today"))
        await deliver(app, referral_received(types=("prescription",), urgency="routine"))  # not urgent: no email
        sent = await eventually(now_or_later(lambda: notify.notifications or None))

        async def logged_as_sent():
            answer = (await client.get("/v1/notifications", headers=headers(settings, "admin"))).json()
            return answer if answer and answer[0]["status"] == "sent" else None

        logged = await eventually(logged_as_sent)
        assert (await client.get("/v1/notifications", headers=headers(settings, "hub", "thanet"))).status_code == 403
    [notification] = sent
    assert notification["email_address"] == HUB_EMAIL and notification["template"]["id"] == TODAY_TEMPLATE
    assert notification["personalisation"]["request_type"] == "food"
    assert notification["personalisation"]["case_link"].startswith("http://127.0.0.1:8005/hub/cases/")
    assert "Margaret" not in json.dumps(notification)  # no resident's data in an email to a shared mailbox
    assert notify.refused_tokens == 0 and notify.sends == 1
    [row] = await messages(settings.database_url)
    assert (row["status"], row["notify_id"], row["log"]) == ("sent", notification["id"], ["sent"])
    assert row["reference"] == notification["reference"]
    [entry] = logged
    assert (entry["status"], entry["reference"], [a["outcome"] for a in entry["log"]]) == (
        "sent",
        notification["reference"],
        ["sent"],
    )


async def test_the_same_escalation_published_twice_is_one_email(settings, directory, notify):
    app = create_app(notify_settings(settings, notify), directory=directory)
    async with running(app) as client:
        await with_hub_email(client, settings)
        now = datetime.now(UTC)
        escalation = AssignmentEscalatedV1(
            assignment_id=uuid.uuid4(),
            request_id=uuid.uuid4(),
            referral_id=uuid.uuid4(),
            request_type="food",
            urgency="today",
            status="routed",
            hub="thanet",
            district_code="E07000114",
            deadline="accept",
            due_at=now - timedelta(minutes=5),
            escalated_at=now,
        )
        for _ in range(2):  # as the scheduler, then `kent-together republish` would
            uow = app.state.runtime.uow()
            async with uow:
                uow.publish(escalation, topic=settings.topics.assignment_status)
                await uow.commit()
        sent = await eventually(now_or_later(lambda: notify.notifications or None))
    [notification] = sent
    assert notification["template"]["id"] == ESCALATION_TEMPLATE
    assert notification["personalisation"]["deadline"] == "accepted"
    assert len(await messages(settings.database_url)) == 1


async def test_notifys_error_answers_a_bad_address_is_final_429_and_500_are_retried_once_sent(
    settings, directory, notify
):
    notify.fail_next(429, 500)
    app = create_app(notify_settings(settings, notify), directory=directory)
    async with running(app) as client:
        await with_hub_email(client, settings)
        await deliver(app, referral_received(types=("food",), urgency="today"))
        await eventually(now_or_later(lambda: notify.notifications or None))
        await with_hub_email(client, settings, email="not-an-address")
        await deliver(app, referral_received(types=("shopping",), urgency="today"))

        async def settled():
            rows = await messages(settings.database_url)
            return rows if len(rows) == 2 and all(r["status"] in ("sent", "failed") for r in rows) else None

        first, second = await eventually(settled)
    # 429: not taken, sent again without asking; 500: the outcome unknown, so Notify is asked first.
    assert first["log"] == ["retry", "retry", "sent"] and first["status"] == "sent"
    assert notify.lookups == [first["reference"]]
    assert len(notify.with_reference(first["reference"])) == 1
    # 400: Notify will never take it; refused once, never retried.
    assert (second["status"], second["log"]) == ("failed", ["refused"])
    assert "email_address Not a valid email address" in second["last_error"]
    assert notify.sends == 4  # 429, 500, sent, refused


async def test_a_wrong_api_key_is_refused_by_notify_and_nothing_is_taken(settings, directory, notify):
    wrong = f"kent_together_test-{SERVICE_ID}-{uuid.uuid4()}"
    app = create_app(
        notify_settings(settings, notify, notify_api_key=__import__("pydantic").SecretStr(wrong)), directory=directory
    )
    async with running(app) as client:
        await with_hub_email(client, settings)
        await deliver(app, referral_received(types=("food",), urgency="today"))
        await eventually(now_or_later(lambda: notify.refused_tokens or None))
    assert notify.notifications == []
    [row] = await messages(settings.database_url)
    assert row["status"] in ("pending", "sending") and "AuthError" in (row["last_error"] or "")


async def test_with_no_api_key_the_message_goes_to_the_local_log_only(settings, directory, notify):
    app = create_app(
        settings.model_copy(update={"run_consumers": False, "notify_poll_seconds": 0.05}), directory=directory
    )
    async with running(app) as client:
        await with_hub_email(client, settings)
        await deliver(app, referral_received(types=("food",), urgency="today"))
        log_file = Path(settings.var_dir) / "notifications.log"
        lines = await eventually(now_or_later(lambda: log_file.exists() and log_file.read_text().splitlines() or None))
    [entry] = [json.loads(line) for line in lines]
    assert entry["to"] == HUB_EMAIL and entry["template"] == "hub-today-request"
    assert notify.sends == 0


def start_worker(settings, notify) -> subprocess.Popen:
    """The notification worker as a process of its own, as a deploy runs it."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "shared.notify",
            "--database-url",
            settings.database_url,
            "--api-key",
            API_KEY,
            "--base-url",
            notify.url,
            "--templates",
            json.dumps(TEMPLATES),
            "--poll-seconds",
            "0.05",
            "--timeout-seconds",
            "1",
            "--backoff-seconds",
            "0.1",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def test_a_today_request_is_one_notify_call_even_with_the_worker_killed_mid_send(settings, directory, notify):
    app = create_app(notify_settings(settings, notify, run_notifications=False), directory=directory)
    async with running(app) as client:
        await with_hub_email(client, settings)
        await deliver(app, referral_received(types=("food",), urgency="today"))
    notify.hold_sends()  # Notify takes the message, and the answer never reaches the worker
    worker = start_worker(settings, notify)
    try:
        held = await asyncio.to_thread(notify.held.wait, 60)
        assert held, worker.stderr.read1().decode() if worker.poll() is not None else "no send reached Notify"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
    finally:
        notify.release.set()
        if worker.poll() is None:
            worker.kill()
    [row] = await messages(settings.database_url)
    assert row["status"] == "sending" and row["log"] == []  # the outcome unknown to us; Notify has it
    assert len(notify.notifications) == 1

    again = start_worker(settings, notify)
    try:

        async def sent():
            rows = await messages(settings.database_url)
            return rows[0] if rows[0]["status"] == "sent" else None

        row = await eventually(sent, timeout=60)
    finally:
        again.send_signal(signal.SIGTERM)
        again.wait(timeout=30)
    assert row["log"] == ["found"] and row["notify_id"] == notify.notifications[0]["id"]
    assert notify.lookups == [row["reference"]]
    assert (notify.sends, len(notify.notifications)) == (1, 1)  # exactly one Notify call for the hub


async def test_a_residents_message_is_sealed_at_rest_opened_to_send_and_erasure_stops_one_not_sent(
    settings, directory, notify
):
    """What the referrals service will do for residents (their reference by text), on the shared mechanism."""
    from shared.crypto import is_sealed
    from shared.notify import Message, enqueue, forget, reference_for

    app = create_app(notify_settings(settings, notify, run_notifications=False), directory=directory)
    async with running(app):
        runtime = app.state.runtime
        for who, phone in (("sent", "07700 900123"), ("erased", "07700 900456")):
            uow = runtime.uow()
            async with uow:
                await enqueue(
                    uow,
                    notifications,
                    Message(
                        reference=reference_for("reference", who),
                        channel="sms",
                        to=phone,
                        template="hub-today-request",
                        personalisation={"reference": "KT-7F3K-9QX2"},
                        about=who,
                    ),
                    sealed=True,
                )
                await uow.commit()
        uow = runtime.uow()
        async with uow:
            assert await forget(uow, notifications, about="erased") == 1
            await uow.commit()
        rows = await messages(settings.database_url)
        assert all(is_sealed(r["recipient"]) for r in rows if r["about"] == "sent")
        assert b"07700" not in b"".join(r["recipient"] + r["personalisation"] for r in rows)
        while await app.state.notifier.send_due():
            pass
    [sent] = notify.notifications
    assert (sent["phone_number"], sent["personalisation"]) == ("07700 900123", {"reference": "KT-7F3K-9QX2"})
    by_about = {r["about"]: r for r in await messages(settings.database_url)}
    assert by_about["sent"]["status"] == "sent" and by_about["erased"]["status"] == "failed"
    assert by_about["erased"]["log"] == []  # never tried: erased before its turn
