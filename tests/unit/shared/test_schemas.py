"""What every request body shares: no control or direction-override character, and `null` in a PATCH only where it clears."""

import pytest
from pydantic import ValidationError

from shared.schemas import Patch, Strict


class Body(Strict):
    name: str
    tags: list[str] = []


class Change(Patch):
    nullable = frozenset({"email"})

    name: str | None = None
    email: str | None = None


@pytest.mark.parametrize("text", ["Jo\x00 Smith", "Jo\u202eHtims", "a\u2066b", "bell\x07"])
def test_text_with_a_nul_or_a_direction_override_is_refused_naming_the_character(text):
    with pytest.raises(ValidationError, match=r"control character U\+"):
        Body(name=text)
    with pytest.raises(ValidationError, match=r"control character U\+"):
        Body(name="ok", tags=[text])


def test_tabs_newlines_and_accents_are_text_like_any_other():
    assert Body(name="Zoë\tO'Brien\nflat 2").name == "Zoë\tO'Brien\nflat 2"


def test_a_patch_refuses_null_where_it_does_not_clear_and_takes_it_where_it_does():
    with pytest.raises(ValidationError, match="may be left out"):
        Change.model_validate({"name": None})
    assert Change.model_validate({"email": None}).model_dump(exclude_unset=True) == {"email": None}
    assert Change.model_validate({}).model_dump(exclude_unset=True) == {}


def test_a_patch_schema_lets_null_through_only_where_it_clears():
    properties = Change.model_json_schema()["properties"]
    assert properties["name"]["type"] == "string" and "anyOf" not in properties["name"]
    assert {"type": "null"} in properties["email"]["anyOf"]
