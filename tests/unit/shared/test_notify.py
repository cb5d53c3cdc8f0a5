"""shared/notify.py's pieces with no database: references, back-off, the local log the embedded default writes."""

from datetime import timedelta

from shared.notify import LocalLog, Message, backoff, reference_for


def test_a_reference_is_stable_for_what_the_message_is_about_and_says_nothing_of_it():
    first = reference_for("routed", "a1", "thanet", "2026-12-01T09:00:00+00:00")
    assert first == reference_for("routed", "a1", "thanet", "2026-12-01T09:00:00+00:00")
    assert first != reference_for("routed", "a1", "medway", "2026-12-01T09:00:00+00:00")
    assert "thanet" not in first and len(first) == 36


def test_retries_back_off_doubling_up_to_an_hour():
    assert [backoff(n, base_seconds=5) for n in (1, 2, 3)] == [timedelta(seconds=s) for s in (5, 10, 20)]
    assert backoff(30, base_seconds=5) == timedelta(hours=1)


async def test_the_local_log_finds_what_it_wrote_by_reference_and_skips_a_line_torn_by_a_crash(tmp_path):
    log = LocalLog(tmp_path / "var" / "notifications.log")
    assert await log.find("r-1") is None  # no file yet
    sent = await log.send(
        Message(reference="r-1", channel="email", to="hub@kent.gov.uk", template="t"), template_id="local:t"
    )
    with log.path.open("a") as out:
        out.write('{"id": "torn", "reference": "r-2"')  # killed mid-write
    assert await log.find("r-1") == sent
    assert await log.find("r-2") is None
    after = await log.send(
        Message(reference="r-3", channel="email", to="hub@kent.gov.uk", template="t"), template_id="local:t"
    )
    assert await log.find("r-3") == after  # written on a line of its own, after the torn one
