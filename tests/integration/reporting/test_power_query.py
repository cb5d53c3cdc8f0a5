"""The OData feed read as Power BI and Excel read it: the URLs Power Query's OData connector sends when a step folds.

Each URL below is the query string Power Query writes for a step in the editor
(its filter, row-count and paging requests), sent as it sends it: percent-encoded, with
its `Prefer` header. A refused step would not fold: Power Query would then download
the whole set and filter it itself, or fail the refresh.
"""

from datetime import timedelta
from urllib.parse import urlsplit
from xml.etree import ElementTree

from tests.integration.reporting.conftest import APRIL, CANTERBURY, Story, analyst, deliver

SERVICE = "reporting"


async def stories(client):
    made = [Story(received_at=APRIL + timedelta(hours=i)) for i in range(4)]
    made += [
        Story(
            request_type="prescription",
            channel="online",
            district_code=CANTERBURY,
            hub="canterbury",
            received_at=APRIL + timedelta(days=1, hours=i),
        )
        for i in range(3)
    ]
    await deliver(
        client.app,
        *[s.received() for s in made],
        *[s.status_changed("routed", after=timedelta(minutes=5)) for s in made],
    )
    return made


async def fetch(client, settings, path_and_query: str, **headers) -> dict:
    response = await client.get(path_and_query, headers={**analyst(settings), **headers})
    assert response.status_code == 200, f"{path_and_query}: {response.text}"
    return response.json()


def ids(body) -> set[str]:
    return {row["request_id"] for row in body["value"]}


async def test_the_filters_power_query_folds_are_answered(client, settings):
    made = await stories(client)
    thanet = {str(s.request_id) for s in made[:4]}
    canterbury = {str(s.request_id) for s in made[4:]}
    # Text.Lower([district]) = "thanet"; Text.Upper; Text.StartsWith (written `… eq true`); Text.Contains.
    assert ids(await fetch(client, settings, "/odata/RequestFacts?$filter=tolower(district)%20eq%20'thanet'")) == thanet
    assert (
        ids(await fetch(client, settings, "/odata/RequestFacts?$filter=toupper(hub)%20eq%20'CANTERBURY'")) == canterbury
    )
    assert (
        ids(await fetch(client, settings, "/odata/RequestFacts?$filter=startswith(district,'canter')%20eq%20true"))
        == canterbury
    )
    assert (
        ids(await fetch(client, settings, "/odata/RequestFacts?$filter=startswith(district,'canter')%20eq%20false"))
        == thanet
    )
    # Date.Year / Date.Month / Date.Day of a datetimezone column.
    assert (
        ids(
            await fetch(
                client,
                settings,
                "/odata/RequestFacts?$filter=year(received_at)%20eq%202020%20and%20"
                "month(received_at)%20eq%204%20and%20day(received_at)%20eq%202",
            )
        )
        == canterbury
    )
    # List.Contains({"food", "befriending"}, [request_type]) folds to `in`.
    assert (
        ids(await fetch(client, settings, "/odata/RequestFacts?$filter=request_type%20in%20('food','befriending')"))
        == thanet
    )
    # A filter on a logical column: `each [out_of_area]`, `each not [out_of_area]`.
    assert ids(await fetch(client, settings, "/odata/RequestFacts?$filter=out_of_area")) == set()
    assert ids(await fetch(client, settings, "/odata/RequestFacts?$filter=not%20out_of_area")) == thanet | canterbury
    # Incremental refresh: RangeStart and RangeEnd as datetimezone, with seven fractional digits.
    assert (
        ids(
            await fetch(
                client,
                settings,
                "/odata/RequestFacts?$filter=received_at%20ge%20"
                "2020-04-02T00:00:00.0000000Z%20and%20received_at%20lt%20"
                "2020-04-03T00:00:00.0000000%2B00:00",
            )
        )
        == canterbury
    )
    # A Decimal Number column compared with a whole-number property.
    daily = await fetch(client, settings, "/odata/DailyRequestsByType?$filter=count%20gt%203.5")
    assert [(r["district"], r["request_type"], r["count"]) for r in daily["value"]] == [("thanet", "food", 4)]


async def test_a_row_count_folds_into_the_count_segment(client, settings):
    await stories(client)
    response = await client.get(
        "/odata/RequestFacts/$count?$filter=district%20eq%20'canterbury'", headers=analyst(settings)
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.text == "3"
    everything = await client.get("/odata/DailyRequestsByType/$count", headers=analyst(settings))
    assert everything.text == "2"


async def test_prefer_maxpagesize_sets_the_page_and_says_so(client, settings):
    made = await stories(client)
    first = await client.get(
        "/odata/RequestFacts?$select=request_id",
        headers={**analyst(settings), "Prefer": 'odata.include-annotations="*", odata.maxpagesize=2'},
    )
    assert first.status_code == 200
    assert first.headers["preference-applied"] == "odata.maxpagesize=2"
    assert len(first.json()["value"]) == 2 and "@odata.nextLink" in first.json()
    seen, link = [], "/odata/RequestFacts?$select=request_id"
    while link:
        body = await fetch(client, settings, link, Prefer="odata.maxpagesize=2")
        seen += [row["request_id"] for row in body["value"]]
        link = body.get("@odata.nextLink")
        link = link and urlsplit(link).path + "?" + urlsplit(link).query
    assert sorted(seen) == sorted(str(s.request_id) for s in made)


async def test_paging_is_stable_while_the_projection_writes(client, settings):
    """Rows arriving ahead of the cursor between two pages neither repeat nor hide rows already there."""
    made = await stories(client)
    client.app.state.runtime.settings.odata_page_size = 3
    first = await fetch(client, settings, "/odata/RequestFacts?$orderby=received_at&$select=request_id,received_at")
    assert len(first["value"]) == 3
    # Meanwhile: three requests received earlier than all of them (a late batch), and one of the
    # first page's rows changes status.
    late = [Story(received_at=APRIL - timedelta(days=1, hours=i)) for i in range(3)]
    await deliver(
        client.app, *[s.received() for s in late], made[0].status_changed("accepted", after=timedelta(hours=1))
    )
    seen = [row["request_id"] for row in first["value"]]
    link = first["@odata.nextLink"]
    while link:
        body = await fetch(client, settings, urlsplit(link).path + "?" + urlsplit(link).query)
        seen += [row["request_id"] for row in body["value"]]
        link = body.get("@odata.nextLink")
    assert sorted(seen) == sorted(str(s.request_id) for s in made)  # each once; the late ones were behind the cursor


async def test_daily_counts_sum_to_the_number_of_requests_in_every_set(client, settings):
    made = await stories(client)
    for name, column in (
        ("DailyRequestsByType", "request_type"),
        ("DailyRequestsByChannel", "channel"),
        ("DailyRequestsByStatus", "status"),
        ("DailyRequestsByHub", "hub"),
        ("DailyRequestsByUrgency", "urgency"),
    ):
        body = await fetch(client, settings, f"/odata/{name}")
        assert sum(row["count"] for row in body["value"]) == len(made), name
        assert {"day", "district", column, "count"} == set(body["value"][0]), name
    long_form = await fetch(client, settings, "/odata/DailyRequestCounts?$filter=dimension%20eq%20'type'")
    assert sum(row["count"] for row in long_form["value"]) == len(made)
    assert all(row["district"] != "*" for row in long_form["value"])


async def test_a_skiptoken_not_made_by_the_feed_is_a_400(client, settings):
    await stories(client)
    for token in ("7", "bm90LWpzb24", "eyJvIjoiZGlzdHJpY3QiLCJhIjpbMV0sInIiOm51bGx9"):
        response = await client.get(f"/odata/RequestFacts?$skiptoken={token}", headers=analyst(settings))
        assert response.status_code == 400, token
        assert response.json()["errors"][0]["field"] == "$skiptoken"


async def test_metadata_carries_the_capabilities_power_query_reads(client, settings):
    metadata = await client.get("/odata/$metadata", headers=analyst(settings))
    text = metadata.text
    ElementTree.fromstring(text.encode())  # well-formed, or no client reads it
    assert 'Namespace="Org.OData.Capabilities.V1" Alias="Capabilities"' in text
    assert '<Annotation Term="Capabilities.FilterFunctions"><Collection>' in text
    for name in ("tolower", "toupper", "year", "month", "day", "startswith", "contains"):
        assert f"<String>{name}</String>" in text
    assert (
        '<Annotations Target="KentTogether.Reporting.Container/RequestFacts">' in text
        and '<Annotation Term="Capabilities.CountRestrictions"><Record>'
        '<PropertyValue Property="Countable" Bool="true"/></Record></Annotation>'
        in text
    )
    assert '<EntitySet Name="DailyRequestsByType" EntityType="KentTogether.Reporting.DailyRequestByType"/>' in text
