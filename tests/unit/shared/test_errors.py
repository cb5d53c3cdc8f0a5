"""Field errors name the field as a caller writes it, and the reason in plain words."""

from shared.errors import field_errors


def test_field_paths_read_as_the_caller_wrote_them():
    errors = field_errors(
        [
            {
                "loc": ("body", "requests", 0, "type"),
                "msg": "Value error, unknown request type 'x'",
                "type": "value_error",
            },
            {"loc": ("body", "resident", "address", "postcode"), "msg": "Field required", "type": "missing"},
            {"loc": ("body", "colour"), "msg": "Extra inputs are not permitted", "type": "extra_forbidden"},
            {"loc": ("query", "limit"), "msg": "Input should be less than or equal to 200", "type": "less_than_equal"},
        ]
    )
    assert errors == [
        {"field": "requests[0].type", "reason": "unknown request type 'x'"},
        {"field": "resident.address.postcode", "reason": "is required"},
        {"field": "colour", "reason": "unknown field"},
        {"field": "limit", "reason": "Input should be less than or equal to 200", "in": "query"},
    ]


async def test_problem_type_uris_use_the_configured_base_in_handlers_and_middleware():
    """The base reaches both the app's handlers (404 here) and the hardening middleware's own answers (413)."""
    import httpx

    from services.reporting.models import tables
    from shared.app import create_service_app
    from shared.settings import ServiceSettings

    settings = ServiceSettings(
        service_name="reporting",
        jwt_signing_key="k" * 40,
        log_json=False,
        problem_type_base="https://developer.kent.gov.uk/kent-together/problems/",
        database_url="sqlite+aiosqlite:///:memory:",
        max_body_bytes=10,
    )
    app = create_service_app(title="t", settings=settings, tables=tables, routers=[])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        missing = await client.get("/nowhere")
        too_big = await client.post("/nowhere", content=b"x" * 100, headers={"Content-Type": "application/json"})
    assert missing.json()["type"] == "https://developer.kent.gov.uk/kent-together/problems/not-found"
    assert too_big.status_code == 413
    assert too_big.json()["type"] == "https://developer.kent.gov.uk/kent-together/problems/payload-too-large"


def test_problem_type_uris_default_to_a_tag_uri_not_an_example_domain():
    from shared.http_errors import ProblemSettings

    assert ProblemSettings().type_of("not-found") == "tag:kent-together,2026:problems/not-found"
