"""The Idempotency-Key header as the IETF draft writes it (an RFC 8941 sf-string), and as clients always sent it."""

import pytest

from shared.errors import ValidationFailed
from shared.idempotency import parse_key


@pytest.mark.parametrize(
    "header, key",
    [
        ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ("call-0001", "call-0001"),
        ('"with \\"quotes\\" and \\\\"', 'with "quotes" and \\'),
        ('"spaces are fine inside"', "spaces are fine inside"),
        ('"k";param=1', "k"),
    ],
)
def test_a_key_is_read_from_a_structured_string_or_a_bare_token(header, key):
    assert parse_key(header) == key


@pytest.mark.parametrize("header", ['"open', '""', "two words", '"bad \\x escape"', '"k" trailing', "é", "x" * 201])
def test_anything_else_is_refused_naming_the_header(header):
    with pytest.raises(ValidationFailed) as refused:
        parse_key(header)
    assert refused.value.extensions["errors"][0]["field"] == "Idempotency-Key"
