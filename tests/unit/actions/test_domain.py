"""The rules of tracking an action, without a database."""

from datetime import UTC, date, datetime

import pytest

from services.actions import domain
from shared.errors import Forbidden, InvalidTransition, ValidationFailed

START = date(2020, 7, 1)


def action(**overrides):
    """A tracked action as stored, before any change."""
    current = {name: None for name in domain.TRACKED_FIELDS}
    current.update(status="not-started", progress=0)
    current.update(overrides)
    return current


def changes(current, given, *, admin=False):
    return {
        c.field: (c.old, c.new, c.narrative)
        for c in domain.tracking_changes(current, given, plan_starts_on=START, may_rate_independently=admin)
    }


def errors(current, given):
    with pytest.raises(ValidationFailed) as raised:
        changes(current, given)
    return {e["field"]: e["reason"] for e in raised.value.extensions["errors"]}


@pytest.mark.parametrize(
    ("timescale", "due"),
    [
        ("short", date(2021, 1, 1)),
        ("medium", date(2021, 7, 1)),
        ("longer", date(2022, 7, 1)),
    ],
)
def test_an_action_is_due_when_its_timescale_band_ends(timescale, due):
    assert domain.baseline_due_date(starts_on=START, timescale=timescale) == due


def test_months_are_counted_to_the_last_day_of_a_shorter_month():
    assert domain.add_months(date(2020, 8, 31), 6) == date(2021, 2, 28)
    assert domain.add_months(date(2019, 8, 31), 6) == date(2020, 2, 29)
    assert domain.add_months(date(2020, 11, 15), 14) == date(2022, 1, 15)


def test_an_agreed_date_overrides_the_baseline_and_slippage_counts_the_days_between():
    baseline = date(2021, 1, 1)
    assert domain.due_date(baseline=baseline, agreed=None) == baseline
    assert domain.due_date(baseline=baseline, agreed=date(2021, 3, 31)) == date(2021, 3, 31)
    assert domain.slippage_days(baseline=baseline, agreed=date(2021, 3, 31)) == 89
    assert domain.slippage_days(baseline=baseline, agreed=date(2020, 12, 1)) == -31
    assert domain.slippage_days(baseline=baseline, agreed=None) == 0


@pytest.mark.parametrize(
    ("status", "today", "overdue"),
    [
        ("on-track", date(2021, 1, 2), True),
        ("on-track", date(2021, 1, 1), False),  # due today is not yet overdue
        ("blocked", date(2021, 6, 1), True),
        ("complete", date(2021, 6, 1), False),
        ("cancelled", date(2021, 6, 1), False),
    ],
)
def test_an_action_is_overdue_once_its_due_date_has_passed_unless_it_is_closed(status, today, overdue):
    assert domain.is_overdue(due=date(2021, 1, 1), status=status, today=today) is overdue
    assert domain.days_overdue(due=date(2021, 1, 1), status=status, today=today) == (
        (today - date(2021, 1, 1)).days if overdue else 0
    )


def test_the_day_ends_at_midnight_in_kent_whatever_the_season():
    assert domain.end_of_day_in_kent(date(2020, 12, 31)) == datetime(2021, 1, 1, 0, 0, tzinfo=UTC)
    assert domain.end_of_day_in_kent(date(2020, 9, 30)) == datetime(2020, 9, 30, 23, 0, tzinfo=UTC)
    assert domain.today_in_kent(datetime(2020, 9, 30, 23, 30, tzinfo=UTC)) == date(2020, 10, 1)


def test_a_rag_rating_needs_a_narrative_and_a_narrative_needs_a_rating():
    assert errors(action(), {"rag": "red"}) == {"rag_narrative": "is required with a RAG rating: say why it is red"}
    assert errors(action(), {"rag_narrative": "Why not"}) == {
        "rag_narrative": "needs a RAG rating to explain: give rag too"
    }
    assert errors(action(), {"rag": None}) == {"rag": "cannot be withdrawn; give red, amber or green"}
    rated = changes(action(), {"rag": "amber", "rag_narrative": "Funding late"})
    assert rated == {"rag": (None, "amber", "Funding late"), "rag_narrative": (None, "Funding late", None)}
    explained = changes(
        action(rag="amber", rag_narrative="Funding late"), {"rag_narrative": "Funding now agreed for Q3"}
    )
    assert explained == {"rag_narrative": ("Funding late", "Funding now agreed for Q3", None)}


def test_blocking_needs_a_reason_which_goes_when_the_action_moves_on():
    assert errors(action(), {"status": "blocked"}) == {"blocked_reason": "is required when the status is blocked"}
    blocked = changes(action(), {"status": "blocked", "blocked_reason": "No contractor"})
    assert blocked["status"] == ("not-started", "blocked", "No contractor")
    moved_on = changes(
        action(status="blocked", blocked_reason="No contractor"), {"status": "on-track", "note": "Contract let"}
    )
    assert moved_on == {
        "status": ("blocked", "on-track", "Contract let"),
        "blocked_reason": ("No contractor", None, "Contract let"),
    }
    assert errors(action(), {"blocked_reason": "Why"}) == {"blocked_reason": "is only kept while the status is blocked"}


def test_completing_completes_progress_and_refuses_less_than_all_of_it():
    assert changes(action(progress=60), {"status": "complete"})["progress"][1] == 100
    assert errors(action(), {"status": "complete", "progress": 80}) == {
        "progress": "must be 100 when the action is complete"
    }


def test_a_started_action_cannot_be_not_started_again():
    with pytest.raises(InvalidTransition):
        changes(action(status="at-risk"), {"status": "not-started"})
    assert changes(action(status="complete", progress=100), {"status": "on-track", "progress": 90})["status"] == (
        "complete",
        "on-track",
        None,
    )  # reopening is allowed


def test_only_an_administrator_gives_the_independent_rating():
    with pytest.raises(Forbidden):
        changes(action(), {"independent_rating": "amber"})
    assert changes(action(), {"independent_rating": "amber"}, admin=True) == {
        "independent_rating": (None, "amber", None)
    }
    assert changes(action(), {"self_rating": "green"}) == {"self_rating": (None, "green", None)}


def test_an_agreed_date_before_the_plan_started_is_refused():
    assert errors(action(), {"agreed_due_date": date(2020, 6, 30)}) == {
        "agreed_due_date": "is before the plan starts (2020-07-01)"
    }


def test_sending_what_is_already_there_changes_nothing():
    assert changes(action(status="on-track", progress=20), {"status": "on-track", "progress": 20}) == {}


def test_completion_time_is_set_on_completing_and_cleared_on_reopening():
    now = datetime(2021, 2, 1, tzinfo=UTC)
    done = domain.tracking_changes(action(), {"status": "complete"}, plan_starts_on=START, may_rate_independently=False)
    assert domain.completed_at_after(done, current=None, now=now) == now
    reopened = domain.tracking_changes(
        action(status="complete", progress=100),
        {"status": "on-track"},
        plan_starts_on=START,
        may_rate_independently=False,
    )
    assert domain.completed_at_after(reopened, current=now, now=now) is None


def test_an_action_as_at_a_date_undoes_the_changes_made_after_it():
    current = {"status": "at-risk", "rag": "amber", "progress": 40, "agreed_due_date": date(2021, 5, 1)}
    later = [  # newest first
        {"field": "agreed_due_date", "old": None},
        {"field": "progress", "old": 25},
        {"field": "status", "old": "on-track"},
        {"field": "rag", "old": "green"},
    ]
    assert domain.state_as_at(current, later) == {
        "status": "on-track",
        "rag": "green",
        "progress": 25,
        "agreed_due_date": None,
    }
    assert domain.state_as_at(current, [{"field": "agreed_due_date", "old": "2021-03-31"}])["agreed_due_date"] == date(
        2021, 3, 31
    )


def test_theme_names_have_slugs_for_filtering():
    assert domain.slug("Digital and ICT Infrastructure") == "digital-and-ict-infrastructure"
    assert domain.slug("Environment & Green Infrastructure") == "environment-and-green-infrastructure"
