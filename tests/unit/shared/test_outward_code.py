"""One outward_code for every row, event and erasure (shared/postcode.py)."""

from shared import privacy
from shared.postcode import outward_code


def test_the_district_of_a_postcode_in_any_form_is_its_outward_code():
    assert outward_code("ct9 2rn") == outward_code("CT9  2RN") == outward_code("CT92RN") == "CT9"
    assert outward_code("ME14 1XX") == "ME14"


def test_an_erased_residents_district_stays_as_it_is_and_a_non_postcode_is_never_kept_whole():
    assert outward_code("CT9") == "CT9" and outward_code("ME14") == "ME14"
    assert outward_code("not a postcode") == "NOTAPOSTC" and outward_code(None) is None and outward_code("") == ""


def test_erasure_uses_the_same_rule():
    assert privacy.outward_code is outward_code
