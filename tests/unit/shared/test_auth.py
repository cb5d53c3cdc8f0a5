"""Tokens: what each role may do, and what is refused."""

import time

import jwt
import pytest

from shared.auth import ROLE_SCOPES, TokenVerifier, mint_token
from shared.errors import Unauthorized

KEY = "unit-test-key-" + "k" * 32


def verifier() -> TokenVerifier:
    return TokenVerifier(issuer="kent-together-dev", audience="kent-together", signing_key=KEY)


def test_a_hub_token_carries_its_hub_and_only_assignment_scopes():
    token = mint_token(signing_key=KEY, role="hub", hub="thanet", issuer="kent-together-dev", audience="kent-together")
    principal = verifier().verify(token)
    assert principal.hub == "thanet"
    # status:read: who helps at a postcode, where a request is by reference and postcode (no personal data).
    assert principal.scopes == {"assignments:read", "assignments:write", "status:read"}


def test_the_online_form_can_write_referrals_but_not_read_or_search_them():
    assert ROLE_SCOPES["online-form"] == {"referrals:write", "status:read"}
    assert "referrals:search" not in ROLE_SCOPES["call-centre"]


def test_a_hub_token_without_a_hub_cannot_be_minted():
    with pytest.raises(ValueError, match="--hub"):
        mint_token(signing_key=KEY, role="hub", issuer="i", audience="a")


def test_a_token_signed_with_another_key_is_refused():
    token = mint_token(signing_key="another-" + "x" * 32, role="admin", issuer="kent-together-dev", audience="kent-together")
    with pytest.raises(Unauthorized, match="invalid token"):
        verifier().verify(token)


def test_an_expired_token_is_refused():
    claims = {"sub": "a", "role": "admin", "iss": "kent-together-dev", "aud": "kent-together", "exp": int(time.time()) - 10}
    with pytest.raises(Unauthorized, match="expired"):
        verifier().verify(jwt.encode(claims, KEY, algorithm="HS256"))


def test_a_token_with_an_unknown_role_is_refused():
    claims = {"sub": "a", "role": "superuser", "iss": "kent-together-dev", "aud": "kent-together", "exp": int(time.time()) + 60}
    with pytest.raises(Unauthorized, match="role"):
        verifier().verify(jwt.encode(claims, KEY, algorithm="HS256"))
