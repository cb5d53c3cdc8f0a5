"""Residents told through GOV.UK Notify: their reference, then that help is arranged; the real client, a local Notify.

The message is written in the transaction that takes the referral (or records the hub's
progress), sealed; the worker sends it once, whatever Notify answers; erasure blanks it.
"""

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from services.referrals import handlers, notifications
from services.referrals.app import create_app
from services.referrals.models import notification_attempts
from services.referrals.models import notifications as messages_table
from shared.crypto import is_sealed
from shared.db import Database
from shared.events import AssignmentStatusChangedV1
from tests.integration.referrals.conftest import referral_body
from tests.support.apps import record_of, running, token
from tests.support.notify import API_KEY, serving_notify
from tests.support.waiting import eventually

SERVICE = "referrals"
TEMPLATES = {name: str(uuid.uuid4()) for name in notifications.TEMPLATES}
MOBILE, MOBILE_E164 = "07911 123456", "+447911123456"


@pytest.fixture
def notify():
    with serving_notify() as stand_in:
        yield stand_in


def with_notify(settings, notify, **overrides):
    return settings.model_copy(
        update={
            "notify_api_key": SecretStr(API_KEY),
            "notify_base_url": notify.url,
            "notify_templates": TEMPLATES,
            "notify_poll_seconds": 0.05,
            "notify_backoff_seconds": 0.05,
            "notify_timeout_seconds": 2.0,
            **overrides,
        }
    )


def resident(*, phone: str | None = MOBILE, email: str | None = None, preference: str | None = "text", **extra):
    person = {
        "name": "Margaret Jones",
        "address": {"line1": "12 Northdown Road", "town": "Margate", "postcode": "CT9 2RN"},
        **extra,
    }
    if phone:
        person["phone"] = phone
    if email:
        person["email"] = email
    if preference:
        person["contact_preference"] = preference
    return person


async def post(client, settings, *, to_notify: bool = True, **person) -> dict:
    body = referral_body(resident=resident(**person), consent={"to_share": True, "to_notify": to_notify})
    response = await client.post("/v1/referrals", json=body, headers=token(settings, "call-centre"))
    assert response.status_code == 201, response.text
    return response.json()


async def progress(app, referral: dict, request_index: int, status: str, *, event=None):
    """A status event from fulfilment, through the status consumer's code (inbox, handlers, commit)."""
    runtime, settings = app.state.runtime, app.state.runtime.settings
    request = referral["requests"][request_index]
    now = datetime.now(UTC)
    data = AssignmentStatusChangedV1(
        assignment_id=uuid.uuid4(),
        request_id=request["id"],
        referral_id=referral["id"],
        request_type=request["type"],
        urgency="today",
        status=status,
        hub="thanet",
        district_code="E07000114",
        received_at=now,
        changed_at=now,
    )
    event = event or data.envelope(source="/kent-together/fulfilment")
    consumer = runtime.consumer(
        group=settings.consumer_group,
        topics=[settings.topics.assignment_status],
        handlers=notifications.told_of_progress(handlers.status_handlers(), recent=timedelta(hours=24)),
    )
    await consumer.process(record_of(settings.topics.assignment_status, event))
    return event


async def rows(settings) -> list[dict]:
    db = Database(settings.database_url)
    try:
        async with db.sessions() as session:
            found = (await session.execute(select(messages_table).order_by(messages_table.c.id))).mappings().all()
            tries = (
                (await session.execute(select(notification_attempts).order_by(notification_attempts.c.id)))
                .mappings()
                .all()
            )
    finally:
        await db.dispose()
    return [{**row, "log": [t["outcome"] for t in tries if t["notification_id"] == row["id"]]} for row in found]


def sent(notify, count: int):
    async def check():
        return notify.notifications if len(notify.notifications) >= count else None

    return check


async def test_a_resident_who_agreed_gets_their_reference_by_text_then_once_that_help_is_arranged_per_request(
    settings, notify
):
    app = create_app(with_notify(settings, notify))
    async with running(app) as client:
        referral = await post(client, settings)
        [reference] = await eventually(sent(notify, 1))
        accepted = await progress(app, referral, 0, "accepted")
        await progress(app, referral, 0, "accepted", event=accepted)  # redelivered
        await progress(app, referral, 0, "accepted")  # republished: a new event, the same news
        await progress(app, referral, 0, "fulfilled")  # help they have just had: no second text
        await progress(app, referral, 1, "routed")  # not news for the resident
        await progress(app, referral, 1, "in_progress")  # a hub that skipped "accepted": arranged all the same
        texts = await eventually(sent(notify, 3))
        stored = await rows(settings)
    assert reference["phone_number"] == MOBILE_E164
    assert reference["template"]["id"] == TEMPLATES["resident-reference-sms"]
    assert reference["personalisation"] == {
        "reference": referral["reference"],
        "help": "food and prescription collection",
    }
    arranged = texts[1:]
    assert [t["template"]["id"] for t in arranged] == [TEMPLATES["resident-help-arranged-sms"]] * 2
    assert [t["personalisation"]["help"] for t in arranged] == ["food", "prescription collection"]
    assert {t["personalisation"]["hub"] for t in arranged} == {"the Thanet hub"}
    assert len(notify.notifications) == 3 and notify.sends == 3
    assert [(r["status"], r["log"]) for r in stored] == [("sent", ["sent"])] * 3
    assert all(is_sealed(r["recipient"]) and is_sealed(r["personalisation"]) for r in stored)  # sealed at rest


async def test_no_consent_or_no_way_to_message_the_resident_sends_nothing(settings, notify):
    app = create_app(with_notify(settings, notify))
    async with running(app) as client:
        quiet = [
            await post(client, settings, to_notify=False),  # a mobile, but no consent
            await post(client, settings, phone="01843 577000", preference="phone"),  # a landline takes no text
            await post(client, settings, email="margaret@example.org", preference="post"),  # asked for post
            await post(client, settings, phone=None, preference=None),  # no contact at all
        ]
        for referral in quiet:
            await progress(app, referral, 0, "accepted")
        # Written with the referral or not at all: nothing to send now means nothing is ever sent.
        assert await rows(settings) == []
        emailed = await post(client, settings, phone="01843 577000", email="margaret@example.org", preference=None)
        [message] = await eventually(sent(notify, 1))
    assert message["email_address"] == "margaret@example.org"  # no mobile: the email they gave
    assert message["personalisation"]["reference"] == emailed["reference"]
    assert message["template"]["id"] == TEMPLATES["resident-reference-email"]


async def test_notifys_answers_a_bad_number_fails_once_429_and_500_are_retried_and_sent_once(settings, notify):
    notify.fail_next(429, 500)
    app = create_app(with_notify(settings, notify))
    async with running(app) as client:
        first = await post(client, settings)
        await eventually(sent(notify, 1))
        notify.fail_next(400)
        await post(client, settings, phone="07911 123457")

        async def settled():
            found = await rows(settings)
            return found if len(found) == 2 and all(r["status"] in ("sent", "failed") for r in found) else None

        one, two = await eventually(settled)
        sends = notify.sends
        again = (await client.get("/v1/notifications", headers=token(settings, "admin"))).json()
    # 429: not taken, sent again; 500: the outcome unknown, so Notify is asked by reference first.
    assert (one["status"], one["log"]) == ("sent", ["retry", "retry", "sent"])
    assert notify.lookups == [one["reference"]] and len(notify.with_reference(one["reference"])) == 1
    assert notify.notifications[0]["personalisation"]["reference"] == first["reference"]
    # 400: Notify will never take it: failed at once, never retried.
    assert (two["status"], two["log"]) == ("failed", ["refused"]) and two["attempts"] == 1
    assert sends == 4  # 429, 500, sent, refused
    assert [(m["status"], m["recipient"]) for m in again] == [("failed", "(sealed)"), ("sent", "(sealed)")]
    assert MOBILE_E164 not in json.dumps(again)


async def test_erasure_blanks_the_residents_messages_in_the_delivery_log_and_the_local_log(settings, tmp_path):
    log_file = tmp_path / "notifications.log"
    app = create_app(settings.model_copy(update={"notify_log_file": log_file, "notify_poll_seconds": 0.05}))
    async with running(app) as client:
        referral = await post(client, settings, email="margaret@example.org")
        await progress(app, referral, 0, "accepted")

        async def written():
            lines = log_file.read_text().splitlines() if log_file.exists() else []
            return lines if len(lines) == 2 else None

        before = await eventually(written)
        erased = await client.post(f"/v1/referrals/{referral['id']}/erasure", headers=token(settings, "admin"))
        assert erased.status_code == 200, erased.text
        logged = (await client.get("/v1/notifications", headers=token(settings, "admin"))).json()
        stored = await rows(settings)
    assert all(MOBILE_E164 in line for line in before) and referral["reference"] in before[0]
    after = log_file.read_text()
    assert MOBILE_E164 not in after and "Margaret" not in after and referral["reference"] not in after
    assert [json.loads(line)["reference"] for line in after.splitlines()] == [
        json.loads(b)["reference"] for b in before
    ]
    assert [(r["recipient"], r["personalisation"], r["status"]) for r in stored] == [(b"", b"{}", "sent")] * 2
    assert [(m["status"], m["recipient"]) for m in logged] == [("sent", ""), ("sent", "")]
