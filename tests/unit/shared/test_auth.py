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
    token = mint_token(
        signing_key="another-" + "x" * 32, role="admin", issuer="kent-together-dev", audience="kent-together"
    )
    with pytest.raises(Unauthorized, match="invalid token"):
        verifier().verify(token)


def test_an_expired_token_is_refused():
    claims = {
        "sub": "a",
        "role": "admin",
        "iss": "kent-together-dev",
        "aud": "kent-together",
        "exp": int(time.time()) - 10,
    }
    with pytest.raises(Unauthorized, match="expired"):
        verifier().verify(jwt.encode(claims, KEY, algorithm="HS256"))


def test_a_token_with_an_unknown_role_is_refused():
    claims = {
        "sub": "a",
        "role": "superuser",
        "iss": "kent-together-dev",
        "aud": "kent-together",
        "exp": int(time.time()) + 60,
    }
    with pytest.raises(Unauthorized, match="role"):
        verifier().verify(jwt.encode(claims, KEY, algorithm="HS256"))


def test_an_entra_roles_list_gives_the_scopes_of_every_known_role_and_ignores_others():
    from shared.auth import Claims, principal_from_claims

    principal = principal_from_claims(
        {
            "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
            "roles": ["analyst", "recovery-lead", "Directory.Reader"],
        },
        Claims(role="roles"),
    )
    assert principal.scopes == ROLE_SCOPES["analyst"] | ROLE_SCOPES["recovery-lead"]
    assert principal.role == "recovery-lead+analyst"


def test_an_entra_app_role_hub_dot_slug_makes_hub_staff_of_that_hub():
    from shared.auth import Claims, principal_from_claims

    principal = principal_from_claims({"sub": "s", "roles": ["hub.thanet"]}, Claims(role="roles"))
    assert (principal.role, principal.hub) == ("hub", "thanet")
    assert principal.scopes == ROLE_SCOPES["hub"]


def test_a_token_naming_two_hubs_is_refused():
    from shared.auth import Claims, principal_from_claims

    with pytest.raises(Unauthorized, match="more than one hub"):
        principal_from_claims({"sub": "s", "roles": ["hub.thanet", "hub.dover"]}, Claims(role="roles"))
    with pytest.raises(Unauthorized, match="more than one hub"):
        principal_from_claims(
            {"sub": "s", "roles": ["hub.thanet"], "extn_hub": "dover"}, Claims(role="roles", hub="extn_hub")
        )


def test_the_hub_comes_from_the_configured_claim():
    from shared.auth import Claims, principal_from_claims

    principal = principal_from_claims(
        {"sub": "s", "roles": ["hub"], "extn_kt_hub": "dover"}, Claims(role="roles", hub="extn_kt_hub")
    )
    assert principal.hub == "dover"


def test_a_roles_list_with_no_known_role_is_refused():
    from shared.auth import Claims, principal_from_claims

    with pytest.raises(Unauthorized, match="role"):
        principal_from_claims({"sub": "s", "roles": ["Task.Read", 7]}, Claims(role="roles"))
