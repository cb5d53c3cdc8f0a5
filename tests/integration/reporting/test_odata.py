"""The OData v4 feed: what Power BI and Excel read with "From OData feed"."""

from datetime import timedelta
from urllib.parse import urlsplit

from tests.integration.reporting.conftest import APRIL, CANTERBURY, Story, analyst, deliver

SERVICE = "reporting"


async def seven_requests(client):
    stories = [Story(received_at=APRIL + timedelta(hours=i)) for i in range(4)]
    stories += [Story(request_type="prescription", district_code=CANTERBURY, hub="canterbury") for _ in range(3)]
    await deliver(
        client.app,
        *[s.received() for s in stories],
        *[s.status_changed("routed", after=timedelta(minutes=5)) for s in stories],
    )
    return stories


async def get(client, settings, path, **params):
    response = await client.get(path, params=params, headers=analyst(settings))
    assert response.status_code == 200, response.text
    return response.json()


async def test_the_service_document_and_metadata_describe_the_entity_sets(client, settings):
    document = await get(client, settings, "/odata/")
    assert {s["name"] for s in document["value"]} == {
        "RequestFacts",
        "DailyRequestCounts",
        "Actions",
        "DailyRequestsByType",
        "DailyRequestsByChannel",
        "DailyRequestsByStatus",
        "DailyRequestsByHub",
        "DailyRequestsByUrgency",
        "DailyReferralsByChannel",
    }
    metadata = await client.get("/odata/$metadata", headers=analyst(settings))
    assert metadata.headers["content-type"].startswith("application/xml")
    assert '<EntitySet Name="RequestFacts" EntityType="KentTogether.Reporting.RequestFact"/>' in metadata.text
    assert '<Property Name="received_at" Type="Edm.DateTimeOffset"' in metadata.text


async def test_filter_select_orderby_and_count_answer_the_matching_rows(client, settings):
    stories = await seven_requests(client)

    page = await get(
        client,
        settings,
        "/odata/RequestFacts",
        **{
            "$filter": "district eq 'thanet' and (request_type eq 'food' or request_type eq 'other') "
            "and received_at ge 2020-04-01T10:00:00Z and not (status eq 'fulfilled')",
            "$select": "request_id,received_at",
            "$orderby": "received_at desc",
            "$count": "true",
        },
    )
    assert page["@odata.count"] == 3
    assert [row["request_id"] for row in page["value"]] == [str(s.request_id) for s in stories[3:0:-1]]
    assert set(page["value"][0]) == {"request_id", "received_at"}
    starts = await get(
        client,
        settings,
        "/odata/RequestFacts",
        **{"$filter": "startswith(district,'canter')", "$count": "true", "$top": "0"},
    )
    assert starts["@odata.count"] == 3 and starts["value"] == []
    daily = await get(
        client, settings, "/odata/DailyRequestCounts", **{"$filter": "dimension eq 'type'", "$orderby": "value"}
    )
    assert [(r["district"], r["value"], r["count"]) for r in daily["value"]] == [
        ("thanet", "food", 4),
        ("canterbury", "prescription", 3),
    ]


async def test_paging_follows_next_links_to_every_row_exactly_once(client, settings):
    app = client.app
    stories = await seven_requests(client)
    app.state.runtime.settings.odata_page_size = 3

    seen, url, pages = [], "/odata/RequestFacts?$orderby=district&$select=request_id,district", 0
    while url:
        response = await client.get(url, headers=analyst(settings))
        body = response.json()
        seen += [row["request_id"] for row in body["value"]]
        link = body.get("@odata.nextLink")
        url = None if link is None else urlsplit(link).path + "?" + urlsplit(link).query
        pages += 1
        assert pages < 10, "the next links loop"
    assert pages == 3 and sorted(seen) == sorted(str(s.request_id) for s in stories)
    topped = await get(client, settings, "/odata/RequestFacts", **{"$top": "4"})
    assert len(topped["value"]) == 3 and "@odata.nextLink" in topped
    rest = await client.get(
        urlsplit(topped["@odata.nextLink"]).path + "?" + urlsplit(topped["@odata.nextLink"]).query,
        headers=analyst(settings),
    )
    assert len(rest.json()["value"]) == 1 and "@odata.nextLink" not in rest.json()


async def test_a_malformed_or_hostile_filter_is_a_clear_400_and_never_reaches_sql(client, settings):
    await seven_requests(client)
    for expression, words in (
        ("district eq 'thanet' or 1 eq 1; DROP TABLE request_facts", "unexpected character"),
        ("district eq 'unterminated", "unexpected character"),
        ("resident_name eq 'Jones'", "unknown property"),
        ("(district eq 'thanet'", "expected close"),
        ("received_at gt 'yesterday'", "does not compare"),
        ("not " * 100 + "triaged eq true", "nested deeper"),
        ("district eq", "ends early"),
    ):
        response = await client.get("/odata/RequestFacts", params={"$filter": expression}, headers=analyst(settings))
        assert response.status_code == 400, expression
        problem = response.json()
        assert problem["errors"][0]["field"] == "$filter" and words in problem["errors"][0]["reason"], problem
    quoted = await get(client, settings, "/odata/RequestFacts", **{"$filter": "district eq 'x'') or (''1'' eq ''1'"})
    assert quoted["value"] == []
    still_there = await get(client, settings, "/odata/RequestFacts", **{"$count": "true", "$top": "0"})
    assert still_there["@odata.count"] == 7
    for option, value in (("$orderby", "district sideways"), ("$select", "name"), ("$top", "-1"), ("$expand", "x")):
        response = await client.get("/odata/RequestFacts", params={option: value}, headers=analyst(settings))
        assert response.status_code == 400 and response.json()["errors"][0]["field"] == option
