"""HTTP: figures as JSON or CSV, the OData v4 feed, and the dashboard page."""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import io
import re
from collections import Counter
from datetime import UTC, date, datetime
from email.utils import format_datetime
from html import escape
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from sqlalchemy import Boolean, Date, Integer, and_

from services.reporting import domain, service
from services.reporting.models import action_facts, request_counts, request_facts
from services.reporting.odata import FUNCTIONS as ODATA_FUNCTIONS
from services.reporting.odata import (
    ODataError,
    Property,
    after_row,
    decode_skiptoken,
    encode_skiptoken,
    order_by_clause,
    parse_count,
    parse_filter,
    parse_orderby,
    parse_select,
)
from services.reporting.schemas import FIGURE_RESPONSES
from shared.auth import Principal, require
from shared.db import UtcDateTime
from shared.errors import ValidationFailed

figures = APIRouter(prefix="/v1/figures", tags=["figures"])
odata = APIRouter(prefix="/odata", tags=["odata"])
dashboard = APIRouter(include_in_schema=False)

Reader = Annotated[Principal, Depends(require("reporting:read"))]
From = Annotated[date | None, Query(alias="from", description="First day included (YYYY-MM-DD)")]
To = Annotated[date | None, Query(alias="to", description="First day not included: Power BI's RangeEnd")]
District = Annotated[str | None, Query(description=f"One of: {', '.join(domain.DISTRICTS)}")]
Format = Annotated[Literal["json", "csv"] | None, Query(description="csv, or send `Accept: text/csv`")]
Suppress = Annotated[bool | None, Query(description='Show counts of 1–4 as "<5" (the service may always do so)')]


def figure_route(path: str, **kwargs):
    """GET, and HEAD for a cheap change check (kept out of the OpenAPI document: same answer, no body)."""

    def register(endpoint):
        figures.head(path, include_in_schema=False)(endpoint)
        return figures.get(path, **kwargs)(endpoint)

    return register


def _span(start: date | None, end: date | None, district: str | None) -> domain.DateRange:
    errors = []
    if start and end and end <= start:
        errors.append(
            {"field": "to", "in": "query", "reason": "must be after `from` (it is the first day not included)"}
        )
    if district is not None and district not in domain.DISTRICTS:
        errors.append(
            {"field": "district", "in": "query", "reason": f"unknown district; one of {', '.join(domain.DISTRICTS)}"}
        )
    if errors:
        raise ValidationFailed(errors)
    return domain.DateRange(start, end)


def _wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept.split("text/csv")[0]


async def _figure(
    request: Request,
    *,
    model: str,
    figure: str,
    group_by: str | None,
    filters: dict,
    columns: list[str],
    compute,
    fmt: str | None,
    suppress: bool | None,
    volatile: str = "",
) -> Response:
    """One way every figure answers: ETag and Last-Modified from the read model's version, 304, HEAD, JSON or CSV."""
    runtime = request.app.state.runtime
    settings = runtime.settings
    suppressed = bool(suppress) or settings.suppress_small_numbers
    as_csv = _wants_csv(request, fmt)
    version, updated = await service.state(runtime.uow(reading=True), model)
    params = sorted((k, v) for k, v in request.query_params.multi_items() if k != "format")
    tag = hashlib.sha256(f"{version}|{request.url.path}|{params}|{as_csv}|{suppressed}|{volatile}".encode()).hexdigest()
    headers = {
        "ETag": f'"{tag[:32]}"',
        "Cache-Control": f"private, max-age={settings.cache_seconds}",
        "Vary": "Accept, Authorization",
    }
    if updated is not None:
        headers["Last-Modified"] = format_datetime(updated.astimezone(UTC), usegmt=True)
    media = "text/csv; charset=utf-8" if as_csv else "application/json"
    if_none_match = request.headers.get("if-none-match", "")
    if (
        headers["ETag"] in [value.strip().removeprefix("W/") for value in if_none_match.split(",")]
        or if_none_match == "*"
    ):
        return Response(status_code=304, headers=headers)
    if request.method == "HEAD":
        return Response(status_code=200, headers=headers, media_type=media)
    rows = await compute()
    if suppressed:
        domain.suppress(rows)
    if as_csv:
        headers["Content-Disposition"] = f'inline; filename="{figure}{"-by-" + group_by if group_by else ""}.csv"'
        return Response(_csv(columns, rows), headers=headers, media_type=media)
    body = {
        "as_at": updated.isoformat() if updated else None,
        "figure": figure,
        "group_by": group_by,
        "filters": {k: (v.isoformat() if isinstance(v, date) else v) for k, v in filters.items()},
        "suppressed": suppressed,
        "columns": columns,
        "rows": [_jsonable(row) for row in rows],
    }
    return JSONResponse(body, headers=headers)


def _jsonable(row: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, (date, datetime)) else v) for k, v in row.items()}


def _csv(columns: list[str], rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            [
                "" if row.get(c) is None else (row[c].isoformat() if isinstance(row[c], (date, datetime)) else row[c])
                for c in columns
            ]
        )
    return out.getvalue()


REQUEST_GROUPS = ("type", "district", "channel", "day", "week", "status", "hub", "urgency")


async def _counts(request: Request, *, dimension: str, group_by: str, span, district) -> list[dict]:
    def uow():
        return request.app.state.runtime.uow(reading=True)

    if group_by == "district":
        found = await service.request_counts_by(
            uow(), dimension=dimension, by_district=True, span=span, district=district
        )
        rows = [{"district": r["key"], "count": r["count"]} for r in found]
    elif group_by in ("day", "week"):
        found = await service.request_counts_by(uow(), dimension=dimension, by_day=True, span=span, district=district)
        by_day = {r["key"]: r["count"] for r in found}
        days = service.day_range(span, list(by_day))
        if group_by == "day":
            rows = [{"day": d, "count": by_day.get(d, 0)} for d in days]
        else:
            weeks: Counter = Counter()
            for d in days:
                weeks[domain.week_of(d)] += by_day.get(d, 0)
            rows = [{"week": w, "count": n} for w, n in sorted(weeks.items())]
    else:
        found = await service.request_counts_by(uow(), dimension=dimension, span=span, district=district)
        rows = [{group_by: r["key"], "count": r["count"]} for r in found]
    return domain.shares(rows)


@figure_route(
    "/requests",
    responses=FIGURE_RESPONSES,
    summary="Requests by type, district, channel, day, week, status, hub or urgency",
)
async def requests_figure(
    request: Request,
    _: Reader,
    group_by: Annotated[Literal[REQUEST_GROUPS], Query()] = "type",  # type: ignore[valid-type]
    start: From = None,
    end: To = None,
    district: District = None,
    format: Format = None,
    suppress: Suppress = None,
):
    span = _span(start, end, district)
    dimension = "type" if group_by in ("district", "day", "week") else group_by
    return await _figure(
        request,
        model="requests",
        figure="requests",
        group_by=group_by,
        filters={"from": start, "to": end, "district": district},
        columns=[group_by, "count", "share"],
        compute=lambda: _counts(request, dimension=dimension, group_by=group_by, span=span, district=district),
        fmt=format,
        suppress=suppress,
    )


@figure_route("/referrals", responses=FIGURE_RESPONSES, summary="Referrals (people) by channel, district, day or week")
async def referrals_figure(
    request: Request,
    _: Reader,
    group_by: Annotated[Literal["channel", "district", "day", "week"], Query()] = "channel",
    start: From = None,
    end: To = None,
    district: District = None,
    format: Format = None,
    suppress: Suppress = None,
):
    span = _span(start, end, district)
    return await _figure(
        request,
        model="requests",
        figure="referrals",
        group_by=group_by,
        filters={"from": start, "to": end, "district": district},
        columns=[group_by, "count", "share"],
        compute=lambda: _counts(
            request, dimension=domain.REFERRAL_DIMENSION, group_by=group_by, span=span, district=district
        ),
        fmt=format,
        suppress=suppress,
    )


@figure_route(
    "/daily",
    responses=FIGURE_RESPONSES,
    summary="Requests per day, split by type (or channel, status, hub): the stacked chart",
)
async def daily_figure(
    request: Request,
    _: Reader,
    split_by: Annotated[Literal["type", "channel", "status", "hub", "urgency"], Query()] = "type",
    start: From = None,
    end: To = None,
    district: District = None,
    format: Format = None,
    suppress: Suppress = None,
):
    span = _span(start, end, district)

    async def compute():
        found = await service.daily_by(
            request.app.state.runtime.uow(reading=True), dimension=split_by, span=span, district=district
        )
        return [{"day": r["day"], split_by: r["value"], "count": r["count"]} for r in found]

    return await _figure(
        request,
        model="requests",
        figure="daily",
        group_by=split_by,
        filters={"from": start, "to": end, "district": district},
        columns=["day", split_by, "count"],
        compute=compute,
        fmt=format,
        suppress=suppress,
    )


@figure_route(
    "/sla",
    responses=FIGURE_RESPONSES,
    summary="SLA breaches (requests not accepted, or not fulfilled, in time: `count`) and open "
    "requests past a deadline now (`overdue_now`)",
)
async def sla_figure(
    request: Request,
    _: Reader,
    start: From = None,
    end: To = None,
    district: District = None,
    format: Format = None,
    suppress: Suppress = None,
):
    span = _span(start, end, district)

    now = datetime.now(UTC)

    async def compute():
        found = await service.request_counts_by(
            request.app.state.runtime.uow(reading=True), dimension="breach", span=span, district=district
        )
        counts = {r["key"]: r["count"] for r in found}
        overdue = await service.overdue_now(
            request.app.state.runtime.uow(reading=True), span=span, district=district, now=now
        )
        return [
            {"deadline": name, "count": counts.get(name, 0), "overdue_now": overdue[name]}
            for name in ("accept", "fulfil")
        ]

    return await _figure(
        request,
        model="requests",
        figure="sla",
        group_by="deadline",
        filters={"from": start, "to": end, "district": district},
        columns=["deadline", "count", "overdue_now"],
        compute=compute,
        fmt=format,
        suppress=suppress,
        volatile=now.strftime("%Y-%m-%dT%H:%M"),
    )  # what is overdue moves on by the minute


@figure_route("/queues", responses=FIGURE_RESPONSES, summary="Requests that went to the out-of-area queue or to triage")
async def queues_figure(
    request: Request,
    _: Reader,
    start: From = None,
    end: To = None,
    district: District = None,
    format: Format = None,
    suppress: Suppress = None,
):
    span = _span(start, end, district)

    async def compute():
        found = await service.request_counts_by(
            request.app.state.runtime.uow(reading=True), dimension="queue", span=span, district=district
        )
        counts = {r["key"]: r["count"] for r in found}
        return [{"queue": name, "count": counts.get(name, 0)} for name in ("out_of_area", "triage")]

    return await _figure(
        request,
        model="requests",
        figure="queues",
        group_by="queue",
        filters={"from": start, "to": end, "district": district},
        columns=["queue", "count"],
        compute=compute,
        fmt=format,
        suppress=suppress,
    )


@figure_route(
    "/series",
    responses=FIGURE_RESPONSES,
    summary="Recurring requests by frequency: series started, and the occurrences they made",
    description=(
        "`series` counts recurring requests (a weekly shop is one series, however many weeks), on the day the "
        "first occurrence came in. `occurrences` counts every occurrence, each on the day it opened: these are "
        "also requests, and `/requests` counts them one each. A one-off request is in neither column."
    ),
)
async def series_figure(
    request: Request,
    _: Reader,
    start: From = None,
    end: To = None,
    district: District = None,
    format: Format = None,
    suppress: Suppress = None,
):
    span = _span(start, end, district)

    async def compute():
        def counts(dimension: str):
            return service.request_counts_by(
                request.app.state.runtime.uow(reading=True), dimension=dimension, span=span, district=district
            )

        series = {r["key"]: r["count"] for r in await counts(domain.SERIES_DIMENSION)}
        occurrences = {r["key"]: r["count"] for r in await counts(domain.RECURRING_DIMENSION)}
        return [
            {"frequency": f, "series": series.get(f, 0), "occurrences": occurrences.get(f, 0)}
            for f in sorted(set(domain.FREQUENCIES) | set(series) | set(occurrences))
        ]

    return await _figure(
        request,
        model="requests",
        figure="series",
        group_by="frequency",
        filters={"from": start, "to": end, "district": district},
        columns=["frequency", "series", "occurrences"],
        compute=compute,
        fmt=format,
        suppress=suppress,
    )


@figure_route(
    "/timings",
    responses=FIGURE_RESPONSES,
    summary="Hours from received to accepted and to fulfilled: median and 90th percentile",
)
async def timings_figure(
    request: Request,
    _: Reader,
    start: From = None,
    end: To = None,
    district: District = None,
    format: Format = None,
    suppress: Suppress = None,
):
    span = _span(start, end, district)
    return await _figure(
        request,
        model="requests",
        figure="timings",
        group_by="measure",
        filters={"from": start, "to": end, "district": district},
        columns=["measure", "count", "median_hours", "p90_hours"],
        compute=lambda: service.timings(request.app.state.runtime.uow(reading=True), span=span, district=district),
        fmt=format,
        suppress=suppress,
    )


@figure_route("/backlog", responses=FIGURE_RESPONSES, summary="Open requests by how long they have waited")
async def backlog_figure(
    request: Request,
    _: Reader,
    start: From = None,
    end: To = None,
    district: District = None,
    format: Format = None,
    suppress: Suppress = None,
):
    span = _span(start, end, district)
    now = datetime.now(UTC)
    return await _figure(
        request,
        model="requests",
        figure="backlog",
        group_by="age",
        filters={"from": start, "to": end, "district": district},
        columns=["age", "count", "oldest_hours"],
        compute=lambda: service.backlog(
            request.app.state.runtime.uow(reading=True), span=span, district=district, now=now
        ),
        fmt=format,
        suppress=suppress,
        volatile=now.strftime("%Y-%m-%dT%H:%M"),  # ages move on by the minute
    )


ACTION_GROUPS = ("cell", "theme", "status", "rag", "priority", "timescale")


@figure_route(
    "/actions",
    responses=FIGURE_RESPONSES,
    summary="Recovery-plan actions by cell, theme, status, RAG, priority or timescale",
)
async def actions_figure(
    request: Request,
    _: Reader,
    group_by: Annotated[Literal[ACTION_GROUPS], Query()] = "cell",  # type: ignore[valid-type]
    start: Annotated[date | None, Query(alias="from", description="Due on or after this day")] = None,
    end: Annotated[date | None, Query(alias="to", description="Due before this day")] = None,
    format: Format = None,
    suppress: Suppress = None,
):
    span = _span(start, end, None)
    today = datetime.now(UTC).date()

    async def compute():
        groups: dict[str, list[dict]] = {}
        for action in await service.actions(request.app.state.runtime.uow(reading=True)):
            if (span.start and action["due_date"] < span.start) or (span.end and action["due_date"] >= span.end):
                continue
            groups.setdefault(action[group_by] or "none", []).append(action)
        rows = [
            {
                group_by: key,
                "count": len(items),
                "overdue": sum(domain.action_is_overdue(a, today) for a in items),
                "progress": round(sum(a["progress"] for a in items) / len(items), 1),
            }
            for key, items in sorted(groups.items())
        ]
        return domain.shares(rows)

    return await _figure(
        request,
        model="actions",
        figure="actions",
        group_by=group_by,
        filters={"from": start, "to": end},
        columns=[group_by, "count", "share", "overdue", "progress"],
        compute=compute,
        fmt=format,
        suppress=suppress,
        volatile=today.isoformat(),
    )


# OData v4


def _props(table, edm: dict[str, str], names: dict[str, str]) -> dict[str, Property]:
    return {odata_name: Property(odata_name, table.c[column], edm[odata_name]) for odata_name, column in names.items()}


def _edm_of(table, names: dict[str, str]) -> dict[str, str]:
    edm = {}
    for odata_name, column in names.items():
        kind = table.c[column].type
        if isinstance(kind, UtcDateTime):
            edm[odata_name] = "Edm.DateTimeOffset"
        elif isinstance(kind, Boolean):
            edm[odata_name] = "Edm.Boolean"
        elif isinstance(kind, Date):
            edm[odata_name] = "Edm.Date"
        elif isinstance(kind, Integer):
            edm[odata_name] = "Edm.Int64"
        else:
            edm[odata_name] = "Edm.String"
    return edm


class EntitySet:
    """One OData entity set over a table: its columns under their OData names, and the rows it holds."""

    def __init__(
        self,
        name: str,
        type_name: str,
        table,
        columns: list[str] | dict[str, str],
        key: list[str],
        *,
        where=None,
        description: str = "",
    ):
        names = columns if isinstance(columns, dict) else {c: c for c in columns}
        self.name, self.type_name, self.table, self.key = name, type_name, table, key
        self.where = where
        """Which of the table's rows are this set's (a dimension of the daily counts)."""
        self.description = description
        self.properties = _props(table, _edm_of(table, names), names)


# District rows only: the all-district (`*`) rows are their sum, and a sum over both counts twice. A
# count that went back to 0 (a request that moved district) says nothing.
_COUNTED = (request_counts.c.district != domain.ALL_DISTRICTS) & (request_counts.c.count != 0)


def _daily(dimension: str, name: str, column: str, what: str) -> EntitySet:
    c = request_counts.c
    return EntitySet(
        name,
        name.replace("Requests", "Request").replace("Referrals", "Referral"),
        request_counts,
        {"day": "day", "district": "district", column: "value", "count": "count"},
        ["day", "district", column],
        where=(c.dimension == dimension) & _COUNTED,
        description=f"{what} a day in each district, by {column.replace('_', ' ')}: each counted once, so a sum "
        "over any rows is a true total.",
    )


ENTITY_SETS = {
    s.name: s
    for s in (
        EntitySet(
            "RequestFacts",
            "RequestFact",
            request_facts,
            [c.name for c in request_facts.columns if c.name != "updated_at"],
            ["request_id"],
            description="One row per request for help: no personal data.",
        ),
        _daily("type", "DailyRequestsByType", "request_type", "Requests received"),
        _daily("channel", "DailyRequestsByChannel", "channel", "Requests received"),
        _daily("status", "DailyRequestsByStatus", "status", "Requests received"),
        _daily("hub", "DailyRequestsByHub", "hub", "Requests received"),
        _daily("urgency", "DailyRequestsByUrgency", "urgency", "Requests received"),
        _daily(domain.REFERRAL_DIMENSION, "DailyReferralsByChannel", "channel", "Referrals received"),
        EntitySet(
            "DailyRequestCounts",
            "DailyRequestCount",
            request_counts,
            ["day", "district", "dimension", "value", "count"],
            ["day", "district", "dimension", "value"],
            where=_COUNTED,
            description="Every daily count in long form, one row per district, dimension and value. A "
            "request counts once in each dimension: sum within one dimension only (or use "
            "the DailyRequestsBy… sets).",
        ),
        EntitySet(
            "Actions",
            "Action",
            action_facts,
            [c.name for c in action_facts.columns if c.name != "updated_at"],
            ["action_id"],
            description="The recovery plan's actions as tracked.",
        ),
    )
}
NAMESPACE = "KentTogether.Reporting"
CAPABILITIES = "https://oasis-tcs.github.io/odata-vocabularies/vocabularies/Org.OData.Capabilities.V1.xml"
CORE = "https://oasis-tcs.github.io/odata-vocabularies/vocabularies/Org.OData.Core.V1.xml"
ODATA_HEADERS = {"OData-Version": "4.0"}


@odata.get("/", summary="OData service document: the entity sets")
async def odata_service_document(request: Request, _: Reader):
    base = str(request.url_for("odata_service_document"))
    return JSONResponse(
        {
            "@odata.context": f"{base}$metadata",
            "value": [{"name": s.name, "kind": "EntitySet", "url": s.name} for s in ENTITY_SETS.values()],
        },
        headers=ODATA_HEADERS,
    )


def _bool(term: str, value: bool) -> str:
    return f'<Annotation Term="Capabilities.{term}" Bool="{"true" if value else "false"}"/>'


def _record(term: str, **values: bool) -> str:
    props = "".join(f'<PropertyValue Property="{k}" Bool="{"true" if v else "false"}"/>' for k, v in values.items())
    return f'<Annotation Term="Capabilities.{term}"><Record>{props}</Record></Annotation>'


def _set_capabilities(s: EntitySet) -> str:
    """What a client (Power Query) may fold into a request on this set, and what it may not ask."""
    return (
        f'<Annotations Target="{NAMESPACE}.Container/{s.name}">'
        f'<Annotation Term="Core.Description" String="{escape(s.description)}"/>'
        + _record("CountRestrictions", Countable=True)
        + _bool("TopSupported", True)
        + _bool("SkipSupported", True)
        + _record("FilterRestrictions", Filterable=True, RequiresFilter=False)
        + _record("SortRestrictions", Sortable=True)
        + _record("SelectSupport", Supported=True)
        + _record("ExpandRestrictions", Expandable=False)
        + _record("SearchRestrictions", Searchable=False)
        + _record("InsertRestrictions", Insertable=False)
        + _record("UpdateRestrictions", Updatable=False)
        + _record("DeleteRestrictions", Deletable=False)
        + "</Annotations>"
    )


@odata.get("/$metadata", summary="OData CSDL: entity types and sets, with their Capabilities annotations")
async def odata_metadata(_: Reader):
    types, sets = [], []
    for s in ENTITY_SETS.values():
        keys = "".join(f'<PropertyRef Name="{k}"/>' for k in s.key)
        props = "".join(
            f'<Property Name="{p.name}" Type="{p.edm}" Nullable="{"false" if p.name in s.key else "true"}"/>'
            for p in s.properties.values()
        )
        types.append(f'<EntityType Name="{s.type_name}"><Key>{keys}</Key>{props}</EntityType>')
        sets.append(f'<EntitySet Name="{s.name}" EntityType="{NAMESPACE}.{s.type_name}"/>')
    functions = "".join(f"<String>{name}</String>" for name in sorted(ODATA_FUNCTIONS))
    container = (
        f'<Annotations Target="{NAMESPACE}.Container">'
        '<Annotation Term="Capabilities.ConformanceLevel" EnumMember="Capabilities.ConformanceLevelType/Minimal"/>'
        f'<Annotation Term="Capabilities.FilterFunctions"><Collection>{functions}</Collection></Annotation>'
        '<Annotation Term="Capabilities.SupportedFormats"><Collection>'
        "<String>application/json;odata.metadata=minimal</String></Collection></Annotation>"
        + _bool("BatchSupported", False)
        + _bool("AsynchronousRequestsSupported", False)
        + _bool("CrossJoinSupported", False)
        + "</Annotations>"
    )
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">'
        f'<edmx:Reference Uri="{CAPABILITIES}"><edmx:Include Namespace="Org.OData.Capabilities.V1" '
        'Alias="Capabilities"/></edmx:Reference>'
        f'<edmx:Reference Uri="{CORE}"><edmx:Include Namespace="Org.OData.Core.V1" Alias="Core"/></edmx:Reference>'
        "<edmx:DataServices>"
        f'<Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="{NAMESPACE}">'
        + "".join(types)
        + f'<EntityContainer Name="Container">{"".join(sets)}</EntityContainer>'
        + container
        + "".join(_set_capabilities(s) for s in ENTITY_SETS.values())
        + "</Schema></edmx:DataServices></edmx:Edmx>"
    )
    return Response(xml, media_type="application/xml", headers=ODATA_HEADERS)


def _entity_set(name: str) -> EntitySet:
    s = ENTITY_SETS.get(name)
    if s is None:
        raise ODataError("entity set", f"unknown {name!r}; one of {', '.join(ENTITY_SETS)}")
    return s


def _where(s: EntitySet, q) -> Any:
    conditions = [
        c for c in (s.where, parse_filter(q["$filter"], s.properties) if q.get("$filter") else None) if c is not None
    ]
    return and_(*conditions) if conditions else None


def _max_page_size(request: Request) -> int | None:
    """`Prefer: odata.maxpagesize=N` (Power Query sends it), if the client asked for a page size."""
    for header in request.headers.getlist("prefer"):
        for preference in header.split(","):
            name, _, value = preference.strip().partition("=")
            if name.strip().lower() == "odata.maxpagesize" and value.strip().strip('"').isdigit():
                return int(value.strip().strip('"'))
    return None


@odata.get(
    "/{entity_set}/$count",
    summary="How many rows of an entity set match $filter, as plain text",
    response_class=PlainTextResponse,
)
async def odata_count(request: Request, entity_set: str, _: Reader):
    s = _entity_set(entity_set)
    q = request.query_params
    for name in q:
        if name.startswith("$") and name not in ("$filter", "$format"):
            raise ODataError(name, "is not supported on $count")
    total = await service.odata_count(request.app.state.runtime.uow(), table=s.table, where=_where(s, q))
    return PlainTextResponse(str(total), headers=ODATA_HEADERS)


@odata.get("/{entity_set}", summary="An entity set, with $filter, $select, $orderby, $top, $skip, $count")
async def odata_entity_set(request: Request, entity_set: str, _: Reader):
    s = _entity_set(entity_set)
    q = request.query_params
    known = {"$filter", "$select", "$orderby", "$top", "$skip", "$count", "$skiptoken", "$format"}
    for name in q:
        if name.startswith("$") and name not in known:
            raise ODataError(name, "is not supported here")
    where = _where(s, q)
    selected = parse_select(q["$select"], s.properties) if q.get("$select") else list(s.properties.values())
    order = parse_orderby(q["$orderby"], s.properties) if q.get("$orderby") else []
    count_wanted = q.get("$count", "false").lower()
    if count_wanted not in ("true", "false"):
        raise ODataError("$count", "must be true or false")
    # The key makes the order total, so a keyset names exactly one place in it.
    ordered = [p.name for p, _ in order]
    order += [(s.properties[k], False) for k in s.key if k not in ordered]
    top = parse_count(q.get("$top"), "$top")
    skip = parse_count(q.get("$skip"), "$skip") or 0
    after = None
    if q.get("$skiptoken"):
        token = decode_skiptoken(q["$skiptoken"], order=order)
        after, top, skip = after_row(order, token.after), token.remaining, 0
    server_max = request.app.state.runtime.settings.odata_page_size
    asked = _max_page_size(request)
    page_size = min(server_max, asked) if asked else server_max
    want = page_size if top is None else min(page_size, top)
    # Sent or not, the order's columns are read: the next page's token is made from them.
    read = list(dict.fromkeys([*selected, *(p for p, _ in order)]))
    rows, total = await service.odata_page(
        request.app.state.runtime.uow(reading=True),
        table=s.table,
        where=where,
        after=after,
        columns=[p.column for p in read],
        order=order_by_clause(order),
        offset=skip,
        limit=want + 1,
        count=count_wanted == "true",
    )
    more = len(rows) > want
    rows = [{p.name: row[i] for i, p in enumerate(read)} for row in rows[:want]]
    base = str(request.url_for("odata_service_document"))
    body: dict[str, Any] = {
        "@odata.context": f"{base}$metadata#{s.name}"
        + (f"({','.join(p.name for p in selected)})" if q.get("$select") else "")
    }
    if total is not None:
        body["@odata.count"] = total
    body["value"] = [{p.name: _odata_value(row[p.name]) for p in selected} for row in rows]
    remaining = None if top is None else top - len(rows)
    if more and rows and remaining != 0:
        token = encode_skiptoken(order=order, row=rows[-1], remaining=remaining)
        params = [(k, v) for k, v in q.multi_items() if k not in ("$skiptoken", "$skip", "$top")]
        body["@odata.nextLink"] = f"{base}{s.name}?{urlencode(params + [('$skiptoken', token)])}"
    headers = dict(ODATA_HEADERS)
    if asked:
        headers["Preference-Applied"] = f"odata.maxpagesize={page_size}"
    return JSONResponse(body, headers=headers)


def _odata_value(value):
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


# The dashboard


@dashboard.get("/", response_class=HTMLResponse)
async def dashboard_page():
    """The page itself holds no figures: its script fetches them with the analyst's token."""
    html, policy = _dashboard()
    return HTMLResponse(
        html,
        headers={
            "Cache-Control": "no-cache",
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Security-Policy": policy,
        },
    )


@functools.cache
def _dashboard() -> tuple[str, str]:
    """The page, and a policy that lets run only its own inline script and style (by their hashes)."""
    html = resources.files("services.reporting").joinpath("dashboard.html").read_text()

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return html, policy
