"""The published contracts are the code's own: documents regenerate to what is committed."""

import json
from pathlib import Path

import pytest

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


def test_the_asyncapi_document_is_valid_against_the_official_asyncapi_3_schema():
    import jsonschema

    schema = json.loads(
        (Path(__file__).resolve().parents[2] / "support" / "schemas" / "asyncapi-3.0.0.json").read_text()
    )
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(document()), key=lambda e: e.path)
    assert not errors, [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors][:5]


def test_the_asyncapi_document_says_every_message_is_structured_mode_with_its_trace_headers():
    doc = document()
    for name, message in doc["components"]["messages"].items():
        headers = message["headers"]["properties"]
        assert {"content-type", "traceparent", "tracestate"} <= set(headers), name
        assert message["bindings"]["kafka"]["key"]["type"] == "string", name
    assert (
        doc["components"]["messages"]["ReferralReceivedV1"]["headers"]["properties"]["content-type"]["const"]
        == "application/cloudevents+json"
    )


def test_the_asyncapi_document_names_each_consumer_groups_receive_operations_and_dead_letter_channel():
    from services.fulfilment.app import FulfilmentSettings
    from services.referrals.app import ReferralsSettings
    from services.reporting.app import ReportingSettings, consumed_topics

    doc = document()
    receives = {
        (op["bindings"]["kafka"]["groupId"]["const"], doc["channels"][op["channel"]["$ref"].split("/")[-1]]["address"])
        for op in doc["operations"].values()
        if op["action"] == "receive"
    }
    reporting = ReportingSettings()
    referrals = ReferralsSettings()
    assert receives == {
        (FulfilmentSettings().consumer_group, FulfilmentSettings().topics.referrals),
        (referrals.consumer_group, referrals.topics.assignment_status),
    } | {(reporting.consumer_group, topic) for topic in consumed_topics(reporting)}
    dead_letters = {c["address"] for c in doc["channels"].values() if "DeadLetter" in c["messages"]}
    assert dead_letters == {"kt.dlq.fulfilment", "kt.dlq.referrals", "kt.dlq.reporting"}
    assert doc["servers"]["production"]["security"] == [{"$ref": "#/components/securitySchemes/scram"}]


def test_the_committed_openapi_documents_match_the_services_code():
    from suite.docs import openapi_documents

    documents = openapi_documents()
    assert set(documents) == {p.stem for p in (DOCS / "openapi").glob("*.json")}
    for name, text in documents.items():
        assert (DOCS / "openapi" / f"{name}.json").read_text() == text, (
            f"docs/openapi/{name}.json is out of date: run `kent-together docs` and commit docs/"
        )


def test_every_protected_operation_names_the_bearer_scheme_and_documents_its_problems():
    for path in (DOCS / "openapi").glob("*.json"):
        openapi = json.loads(path.read_text())
        assert openapi["components"]["securitySchemes"]["bearer"] == {
            **openapi["components"]["securitySchemes"]["bearer"],
            "type": "http",
            "scheme": "bearer",
        }
        for route, item in openapi["paths"].items():
            for method, operation in item.items():
                name = f"{path.stem}: {method.upper()} {route}"
                if route in ("/health", "/ready", "/metrics") or route.startswith("/v1/public/"):  # for anyone
                    assert "security" not in operation, name
                    continue
                assert operation["security"] == [{"bearer": []}], name
                assert operation["x-required-scopes"], name
                for status in ("401", "403", "429"):
                    assert operation["responses"][status]["content"] == {
                        "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }, name
                for status, response in operation["responses"].items():
                    if status.startswith(("4", "5")):
                        assert list(response["content"]) == ["application/problem+json"], f"{name} {status}"
                if "422" in operation["responses"]:
                    assert operation["responses"]["422"]["content"]["application/problem+json"]["schema"] == {
                        "$ref": "#/components/schemas/ValidationProblem"
                    }, name
        assert "HTTPValidationError" not in openapi["components"]["schemas"], path.stem


def test_a_validation_problem_the_service_sends_fits_the_documented_schema():
    import jsonschema

    openapi = json.loads((DOCS / "openapi" / "referrals.json").read_text())
    sent = {
        "type": "tag:kent-together,2026:problems/validation-failed",
        "title": "The request has invalid fields",
        "status": 422,
        "detail": "1 field invalid",
        "instance": "/v1/referrals",
        "request_id": "r-1",
        "errors": [
            {"field": "resident.address.postcode", "reason": "not a UK postcode"},
            {"field": "limit", "reason": "must be at most 500", "in": "query"},
        ],
    }
    schema = {"$ref": "#/components/schemas/ValidationProblem", "components": openapi["components"]}
    jsonschema.validate(sent, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**sent, "errors": [{"loc": ["body"], "msg": "x"}]}, schema)
