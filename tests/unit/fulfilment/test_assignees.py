"""Who may take, hand over and release a case: the rules alone."""

import pytest

from services.fulfilment.assignees import HANDED_OVER, RELEASED, TAKEN, holder_change
from shared.errors import Conflict, ValidationFailed


def test_a_worker_takes_an_unheld_open_case_and_taking_it_again_changes_nothing():
    assert holder_change(change=TAKEN, status="routed", holder=None, by="ann", admin=False) == "ann"
    assert holder_change(change=TAKEN, status="accepted", holder="ann", by="ann", admin=False) == "ann"


def test_a_case_a_colleague_holds_cannot_be_taken_from_them_even_by_an_administrator():
    with pytest.raises(Conflict, match="ask them to hand it over"):
        holder_change(change=TAKEN, status="routed", holder="bob", by="ann", admin=False)
    with pytest.raises(Conflict):
        holder_change(change=TAKEN, status="routed", holder="bob", by="admin", admin=True)


def test_a_closed_case_cannot_be_taken_or_handed_over_but_can_be_released():
    with pytest.raises(Conflict, match="fulfilled"):
        holder_change(change=TAKEN, status="fulfilled", holder=None, by="ann", admin=False)
    with pytest.raises(Conflict):
        holder_change(change=HANDED_OVER, status="cancelled", holder="ann", by="ann", admin=False, to="bob")
    assert holder_change(change=RELEASED, status="fulfilled", holder="ann", by="ann", admin=False) is None


def test_unheld_cases_are_shared_out_and_held_ones_handed_over_only_by_their_holder_or_an_administrator():
    assert holder_change(change=HANDED_OVER, status="routed", holder=None, by="ann", admin=False, to="bob") == "bob"
    assert holder_change(change=HANDED_OVER, status="routed", holder="ann", by="ann", admin=False, to="bob") == "bob"
    with pytest.raises(Conflict, match="only they"):
        holder_change(change=HANDED_OVER, status="routed", holder="cat", by="ann", admin=False, to="bob")
    assert holder_change(change=HANDED_OVER, status="routed", holder="cat", by="admin", admin=True, to="bob") == "bob"
    with pytest.raises(Conflict, match="already"):
        holder_change(change=HANDED_OVER, status="routed", holder="bob", by="bob", admin=False, to="bob")
    with pytest.raises(ValidationFailed):
        holder_change(change=HANDED_OVER, status="routed", holder=None, by="ann", admin=False, to=None)


def test_only_the_holder_or_an_administrator_releases_a_case_and_an_unheld_one_cannot_be():
    with pytest.raises(Conflict, match="nobody"):
        holder_change(change=RELEASED, status="routed", holder=None, by="ann", admin=False)
    with pytest.raises(Conflict, match="only they"):
        holder_change(change=RELEASED, status="routed", holder="bob", by="ann", admin=False)
    assert holder_change(change=RELEASED, status="routed", holder="bob", by="admin", admin=True) is None
