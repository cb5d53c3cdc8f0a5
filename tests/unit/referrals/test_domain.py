"""The rules of intake, with no database and no broker."""

from datetime import UTC, date, datetime

import pytest

from services.referrals import domain
from shared.postcode import normalise_postcode, outward_code


@pytest.mark.parametrize("typed", ["ct91ab", " CT9 1AB ", "Ct9  1aB", "CT91AB"])
def test_a_postcode_is_stored_in_one_form_whatever_the_spacing(typed):
    assert normalise_postcode(typed) == "CT9 1AB"


@pytest.mark.parametrize("typed", ["", "CT9", "12345", "CT9 1ABC", "Q1 1AA1"])
def test_something_that_is_not_a_postcode_is_refused(typed):
    with pytest.raises(ValueError, match="not a valid UK postcode"):
        normalise_postcode(typed)


def test_only_the_postcode_district_travels_to_reporting():
    assert outward_code("me14 1xx") == "ME14"


def test_a_uk_phone_number_is_stored_in_international_form():
    assert domain.normalise_phone("01843 577000") == "+441843577000"
    assert domain.normalise_phone("+44 7911 123456") == "+447911123456"


@pytest.mark.parametrize("typed", ["12345", "phone me", "0800 00"])
def test_a_number_that_cannot_be_dialled_is_refused(typed):
    with pytest.raises(ValueError):
        domain.normalise_phone(typed)


def test_names_match_whatever_the_case_order_accents_or_punctuation():
    assert (
        domain.name_key("Jones, Margaret") == domain.name_key("  margaret JONES ") == domain.name_key("Margaret Jönes")
    )


def test_a_reference_can_be_read_over_the_phone():
    reference = domain.make_reference()
    assert reference.startswith("KT-") and len(reference) == 12
    assert not set(reference[3:].replace("-", "")) & set("ILOU")


def test_a_reference_typed_loosely_is_understood():
    assert domain.normalise_reference("kt7f3k9qx2") == "KT-7F3K-9QX2"
    assert domain.normalise_reference("KT-7F3K-9QXO") == "KT-7F3K-9QX0"  # O read as zero


@pytest.mark.parametrize(
    ("needed_by", "urgency"),
    [
        (None, "routine"),
        (date(2020, 4, 1), "today"),
        (date(2020, 3, 30), "today"),
        (date(2020, 4, 3), "within-48-hours"),
        (date(2020, 4, 8), "this-week"),
        (date(2020, 4, 20), "routine"),
    ],
)
def test_urgency_follows_the_date_help_is_needed_by(needed_by, urgency):
    received = datetime(2020, 4, 1, 9, 30, tzinfo=UTC)
    assert domain.urgency_for(needed_by=needed_by, received=received) == urgency


def test_same_name_and_date_of_birth_is_the_same_person():
    assert domain.is_same_person(
        name_a="Jo Smith",
        dob_a=date(1950, 1, 1),
        postcode_a="CT9 1AB",
        phone_a=None,
        name_b="SMITH Jo",
        dob_b=date(1950, 1, 1),
        postcode_b="ME14 1XX",
        phone_b="+441843577000",
    )


def test_same_name_alone_is_not_the_same_person():
    assert not domain.is_same_person(
        name_a="Jo Smith",
        dob_a=date(1950, 1, 1),
        postcode_a="CT9 1AB",
        phone_a="+441843577000",
        name_b="Jo Smith",
        dob_b=date(1980, 5, 5),
        postcode_b="ME14 1XX",
        phone_b="+447911123456",
    )


def test_a_date_of_birth_in_the_future_is_refused():
    with pytest.raises(ValueError, match="future"):
        domain.check_date_of_birth(date(2030, 1, 1), today=date(2026, 1, 1))
