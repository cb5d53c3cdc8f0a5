"""The series figure: recurring requests counted as series and as occurrences, each occurrence a request."""

import uuid
from datetime import timedelta

from tests.integration.reporting.conftest import APRIL, Story, by, deliver, figure

SERVICE = "reporting"
H = timedelta(hours=1)


def weekly_series(weeks: int) -> list:
    """A weekly shop: its first occurrence as referrals and fulfilment tell it, then one more per week."""
    first = Story()
    series_id = first.request_id
    tags = {"series_id": series_id, "frequency": "weekly"}
    events = [first.received()]
    routed = first.status_changed("routed", after=0.1 * H).model_copy(update={**tags, "occurrence": 1})
    fulfilled = first.status_changed("fulfilled", after=30 * H).model_copy(
        update={**tags, "occurrence": 1, "series_continues": True}
    )
    events += [routed, fulfilled]
    for week in range(2, weeks + 1):
        later = Story(received_at=APRIL + timedelta(weeks=week - 1))
        later.referral_id, later.request_id = first.referral_id, uuid.uuid4()
        events.append(
            later.status_changed("routed", after=0 * H).model_copy(
                update={**tags, "occurrence": week, "channel": "phone"}
            )
        )
    return events


async def test_occurrences_are_requests_and_a_series_counts_once(client, settings):
    one_off = Story(request_type="prescription")
    await deliver(client.app, *weekly_series(3), one_off.received(), one_off.status_changed("routed", after=H))

    requests = await figure(client, settings, "requests", group_by="type", suppress="false")
    assert by(requests["rows"], "type") == {"food": 3, "prescription": 1}  # every occurrence is a request
    channels = await figure(client, settings, "requests", group_by="channel", suppress="false")
    assert by(channels["rows"], "channel") == {"phone": 4}  # later occurrences keep their referral's channel
    weeks = await figure(client, settings, "requests", group_by="week", suppress="false")
    assert [r["count"] for r in weeks["rows"] if r["count"]] == [2, 1, 1]  # each on the week it opened

    found = await figure(client, settings, "series", suppress="false")
    assert found["columns"] == ["frequency", "series", "occurrences"]
    rows = {r["frequency"]: (r["series"], r["occurrences"]) for r in found["rows"]}
    assert rows == {"fortnightly": (0, 0), "monthly": (0, 0), "weekly": (1, 3)}


async def test_the_bi_view_of_requests_says_which_series_and_occurrence_each_is(client, settings):
    from sqlalchemy import text

    events = weekly_series(2)
    await deliver(client.app, *events)
    series_id = str(events[1].series_id)  # the first occurrence's routed event
    async with client.app.state.runtime.db.engine.connect() as connection:
        rows = (
            await connection.execute(
                text("SELECT series_id, occurrence, frequency FROM reporting_requests ORDER BY occurrence")
            )
        ).all()
    assert [tuple(r) for r in rows] == [(series_id, 1, "weekly"), (series_id, 2, "weekly")]
