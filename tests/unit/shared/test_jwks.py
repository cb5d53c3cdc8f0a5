"""Production tokens: RS256, verified against the identity provider's JWKS."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.auth import TokenVerifier
from shared.errors import Unauthorized


@pytest.fixture
def identity_provider():
    """A JWKS endpoint on loopback, as the council's identity provider would serve it."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="council-2026", use="sig", alg="RS256")
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield key, f"http://127.0.0.1:{server.server_port}/jwks.json"
    server.shutdown()


def sign(key, **claims):
    base = {
        "sub": "adviser-1",
        "role": "call-centre",
        "iss": "https://idp.kent.example",
        "aud": "kent-together",
        "exp": int(time.time()) + 300,
    }
    return jwt.encode({**base, **claims}, key, algorithm="RS256", headers={"kid": "council-2026"})


async def test_a_token_from_the_identity_provider_is_accepted(identity_provider):
    key, url = identity_provider
    verifier = TokenVerifier(issuer="https://idp.kent.example", audience="kent-together", jwks_url=url)
    assert (await verifier.authenticate(sign(key))).role == "call-centre"


async def test_a_token_for_another_audience_is_refused(identity_provider):
    key, url = identity_provider
    verifier = TokenVerifier(issuer="https://idp.kent.example", audience="kent-together", jwks_url=url)
    with pytest.raises(Unauthorized):
        await verifier.authenticate(sign(key, aud="another-service"))


async def test_an_hs256_token_is_refused_when_the_jwks_is_configured(identity_provider):
    _, url = identity_provider
    verifier = TokenVerifier(issuer="https://idp.kent.example", audience="kent-together", jwks_url=url)
    forged = jwt.encode(
        {
            "sub": "x",
            "role": "admin",
            "iss": "https://idp.kent.example",
            "aud": "kent-together",
            "exp": int(time.time()) + 60,
        },
        "guessable-" + "k" * 32,
        algorithm="HS256",
        headers={"kid": "council-2026"},
    )
    with pytest.raises(Unauthorized):
        await verifier.authenticate(forged)


async def test_the_online_form_key_signs_the_online_forms_tokens_and_nothing_else(identity_provider):
    key, url = identity_provider
    form_key = "online-form-" + "f" * 32
    verifier = TokenVerifier(
        issuer="https://idp.kent.example", audience="kent-together", jwks_url=url, online_form_key=form_key
    )
    claims = {"iss": "https://idp.kent.example", "aud": "kent-together", "exp": int(time.time()) + 300}
    form = jwt.encode({**claims, "sub": "web-online-form", "role": "online-form"}, form_key, algorithm="HS256")
    assert (await verifier.authenticate(form)).scopes == {"referrals:write", "status:read"}
    for role, hub in (("admin", None), ("hub", "thanet"), ("call-centre", None)):
        forged = jwt.encode(
            {**claims, "sub": "web-online-form", "role": role, **({"hub": hub} if hub else {})},
            form_key,
            algorithm="HS256",
        )
        with pytest.raises(Unauthorized, match="online form's tokens only"):
            await verifier.authenticate(forged)
    other_key = jwt.encode({**claims, "sub": "web-online-form", "role": "online-form"}, "x" * 44, algorithm="HS256")
    with pytest.raises(Unauthorized, match="invalid token"):
        await verifier.authenticate(other_key)
    assert (await verifier.authenticate(sign(key))).role == "call-centre", "the provider's tokens as before"


def test_the_providers_role_values_are_mapped_to_ours_by_the_one_claim_mapping():
    from shared.auth import Claims, principal_from_claims

    names = Claims(role="roles", role_map={"KentTogether.HubWorker": "hub", "KentTogether.Adviser": "call-centre"})
    principal = principal_from_claims({"sub": "s", "roles": ["KentTogether.HubWorker"], "hub": "dover"}, names)
    assert (principal.role, principal.hub) == ("hub", "dover")
    assert principal_from_claims({"sub": "s", "roles": ["KentTogether.Adviser", "Other"]}, names).role == "call-centre"
    with pytest.raises(Unauthorized, match="no known role"):
        principal_from_claims({"sub": "s", "roles": ["KentTogether.HubWorker"]}, Claims(role="roles"))
