"""How events fold into a request's facts, and facts into counts: no database, no broker."""

import itertools
import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta

from services.reporting import domain
from shared.events import AssignmentEscalatedV1, AssignmentStatusChangedV1, RequestCancelledV1, RequestReceivedV1

AT = datetime(2020, 4, 1, 9, tzinfo=UTC)
IDS = dict(referral_id=uuid.uuid4(), request_id=uuid.uuid4())


def received():
    return RequestReceivedV1(
        **IDS, request_type="food", channel="online", postcode_district="CT9", urgency="today", received_at=AT
    )


def status(name, hours, *, hub="thanet", code="E07000114", **times):
    return AssignmentStatusChangedV1(
        **IDS,
        assignment_id=uuid.uuid4(),
        request_type="food",
        urgency="today",
        status=name,
        hub=hub,
        district_code=code,
        received_at=AT,
        changed_at=AT + timedelta(hours=hours),
        **times,
    )


def fold(events) -> dict:
    fact = domain.new_request_fact(str(IDS["request_id"]), str(IDS["referral_id"]))
    for event in events:
        {
            RequestReceivedV1: domain.apply_request_received,
            AssignmentStatusChangedV1: domain.apply_status_changed,
            RequestCancelledV1: domain.apply_request_cancelled,
            AssignmentEscalatedV1: domain.apply_escalated,
        }[type(event)](fact, event)
    return fact


def test_a_request_ends_with_the_same_facts_whatever_order_its_events_arrive_in():
    events = [
        received(),
        status("routed", 0.1, routed_at=AT),
        status("accepted", 2, accepted_at=AT + timedelta(hours=2)),
        status("fulfilled", 20, closed_at=AT + timedelta(hours=20)),
    ]
    outcomes = {tuple(sorted(fold(order).items(), key=str)) for order in itertools.permutations(events)}
    assert len(outcomes) == 1
    fact = fold(events)
    assert (fact["status"], fact["district"], fact["hub"], fact["channel"]) == (
        "fulfilled",
        "thanet",
        "thanet",
        "online",
    )
    assert fact["accepted_at"] == AT + timedelta(hours=2)


def test_a_status_change_before_its_request_is_received_still_counts_on_the_day_it_came_in():
    fact = fold([status("routed", 0.1)])
    assert fact["received_day"] == date(2020, 4, 1) and fact["channel"] is None
    assert ("2020-04-01", "thanet", "channel", "unknown") in {(str(k[0]), *k[1:]) for k in domain.request_keys(fact)}


def test_a_residents_cancellation_is_not_undone_by_a_late_routing_event():
    cancelled = RequestCancelledV1(
        **IDS, request_type="food", reason="no-longer-needed", cancelled_at=AT + timedelta(hours=1)
    )
    assert fold([received(), cancelled, status("routed", 0.1)])["status"] == "cancelled"
    assert fold([received(), status("routed", 0.1), cancelled])["status"] == "cancelled"


def test_an_out_of_area_request_is_counted_as_out_of_area_and_in_the_queue_figure():
    fact = fold([received(), status("out_of_area", 0.1, hub=None, code="E06000035")])
    assert fact["district"] == domain.OUT_OF_AREA
    assert ("queue", "out_of_area") in {(k[2], k[3]) for k in domain.request_keys(fact)}


def test_every_fact_counts_for_its_district_and_for_all_districts():
    keys = domain.request_keys(fold([received(), status("routed", 0.1)]))
    assert Counter(k[1] for k in keys) == {"thanet": 5, domain.ALL_DISTRICTS: 5}


def test_moving_a_fact_subtracts_its_old_keys_and_adds_its_new_ones():
    before = domain.request_keys(fold([received(), status("routed", 0.1)]))
    after = domain.request_keys(fold([received(), status("routed", 0.1), status("accepted", 1)]))
    changes = Counter()
    domain.count_changes(before, after, changes)
    assert {k[1:]: n for k, n in changes.items() if n} == {
        ("thanet", "status", "routed"): -1,
        ("thanet", "status", "accepted"): 1,
        ("*", "status", "routed"): -1,
        ("*", "status", "accepted"): 1,
    }


def test_suppression_shows_counts_of_one_to_four_as_under_five_and_hides_their_share():
    rows = domain.suppress([{"count": 0, "share": 0.0}, {"count": 4, "share": 0.1}, {"count": 5, "share": 0.2}])
    assert rows == [{"count": 0, "share": 0.0}, {"count": "<5", "share": None}, {"count": 5, "share": 0.2}]


def test_percentiles_are_nearest_rank_and_none_without_values():
    values = sorted(range(1, 11))
    assert (domain.percentile(values, 0.5), domain.percentile(values, 0.9)) == (5, 9)
    assert domain.percentile([], 0.5) is None


def test_an_open_action_past_its_due_date_is_overdue_and_a_complete_one_is_not():
    today = date(2020, 10, 2)
    assert domain.action_is_overdue({"status": "on-track", "due_date": date(2020, 10, 1)}, today)
    assert not domain.action_is_overdue({"status": "complete", "due_date": date(2020, 10, 1)}, today)
