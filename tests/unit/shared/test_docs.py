"""The published contracts are the code's own: documents regenerate to what is committed."""

import json
from pathlib import Path

from shared.asyncapi import document, render

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_the_committed_asyncapi_document_matches_the_contracts():
    assert (DOCS / "asyncapi.json").read_text() == render(), "run `kent-together docs` and commit docs/"


def test_every_registered_event_is_on_a_documented_topic():
    doc = document()
    on_channels = {m for channel in doc["channels"].values() for m in channel["messages"]}
    assert on_channels == set(doc["components"]["messages"])


def test_events_on_reporting_topics_carry_no_personal_data():
    doc = document()
    for message_name in doc["channels"]["request_stats"]["messages"]:
        assert doc["components"]["messages"][message_name]["x-personal-data"] is False


def test_the_referral_body_schema_is_in_the_openapi_document():
    openapi = json.loads((DOCS / "openapi" / "referrals.json").read_text())
    body = openapi["paths"]["/v1/referrals"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ReferralIn"}
    assert {"ReferralIn", "ResidentIn", "AddressIn", "RequestIn"} <= set(openapi["components"]["schemas"])
