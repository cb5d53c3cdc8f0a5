"""HTTP: figures as JSON or CSV, the OData v4 feed, and the dashboard page."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from email.utils import format_datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

from services.reporting import domain, entity_sets
from services.reporting import figures as read
from services.reporting.dashboard import HEADERS as DASHBOARD_HEADERS
from services.reporting.dashboard import page as dashboard_html
from services.reporting.figures import ACTION_GROUPS, REQUEST_GROUPS
from services.reporting.schemas import FIGURE_RESPONSES
from shared.auth import Principal, require
from shared.errors import ValidationFailed
from shared.uow import UnitOfWork

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
    compute: Callable[[], Awaitable[list[dict[str, Any]]]],
    fmt: str | None,
    suppress: bool | None,
    volatile: str = "",
) -> Response:
    """One way every figure answers: ETag and Last-Modified from the read model's version, 304, HEAD, JSON or CSV."""
    runtime = request.app.state.runtime
    settings = runtime.settings
    suppressed = bool(suppress) or settings.suppress_small_numbers
    as_csv = _wants_csv(request, fmt)
    version, updated = await read.state(runtime.uow(reading=True), model)
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
        return Response(read.as_csv(columns, rows), headers=headers, media_type=media)
    body = {
        "as_at": updated.isoformat() if updated else None,
        "figure": figure,
        "group_by": group_by,
        "filters": {k: (v.isoformat() if isinstance(v, date) else v) for k, v in filters.items()},
        "suppressed": suppressed,
        "columns": columns,
        "rows": [read.as_json(row) for row in rows],
    }
    return JSONResponse(body, headers=headers)


def _reading(request: Request) -> UnitOfWork:
    return request.app.state.runtime.uow(reading=True)


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
    return await _figure(
        request,
        model="requests",
        figure="requests",
        group_by=group_by,
        filters={"from": start, "to": end, "district": district},
        columns=[group_by, "count", "share"],
        compute=lambda: read.requests(_reading(request), group_by=group_by, span=span, district=district),
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
        compute=lambda: read.referrals(_reading(request), group_by=group_by, span=span, district=district),
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
    return await _figure(
        request,
        model="requests",
        figure="daily",
        group_by=split_by,
        filters={"from": start, "to": end, "district": district},
        columns=["day", split_by, "count"],
        compute=lambda: read.daily(_reading(request), split_by=split_by, span=span, district=district),
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
    return await _figure(
        request,
        model="requests",
        figure="sla",
        group_by="deadline",
        filters={"from": start, "to": end, "district": district},
        columns=["deadline", "count", "overdue_now"],
        compute=lambda: read.sla(_reading(request), span=span, district=district, now=now),
        fmt=format,
        suppress=suppress,
        volatile=now.strftime("%Y-%m-%dT%H:%M"),  # what is overdue moves on by the minute
    )


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
    return await _figure(
        request,
        model="requests",
        figure="queues",
        group_by="queue",
        filters={"from": start, "to": end, "district": district},
        columns=["queue", "count"],
        compute=lambda: read.queues(_reading(request), span=span, district=district),
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
    return await _figure(
        request,
        model="requests",
        figure="series",
        group_by="frequency",
        filters={"from": start, "to": end, "district": district},
        columns=["frequency", "series", "occurrences"],
        compute=lambda: read.series(_reading(request), span=span, district=district),
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
        compute=lambda: read.timings(_reading(request), span=span, district=district),
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
        compute=lambda: read.backlog(_reading(request), span=span, district=district, now=now),
        fmt=format,
        suppress=suppress,
        volatile=now.strftime("%Y-%m-%dT%H:%M"),  # ages move on by the minute
    )


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
    return await _figure(
        request,
        model="actions",
        figure="actions",
        group_by=group_by,
        filters={"from": start, "to": end},
        columns=[group_by, "count", "share", "overdue", "progress"],
        compute=lambda: read.actions(_reading(request), group_by=group_by, span=span, today=today),
        fmt=format,
        suppress=suppress,
        volatile=today.isoformat(),
    )


# OData v4 (the entity sets and their reading: entity_sets.py; the query options: odata.py)

ODATA_HEADERS = {"OData-Version": "4.0"}


def _odata_base(request: Request) -> str:
    return str(request.url_for("odata_service_document"))


@odata.get("/", summary="OData service document: the entity sets")
async def odata_service_document(request: Request, _: Reader):
    return JSONResponse(entity_sets.service_document(_odata_base(request)), headers=ODATA_HEADERS)


@odata.get("/$metadata", summary="OData CSDL: entity types and sets, with their Capabilities annotations")
async def odata_metadata(_: Reader):
    return Response(entity_sets.metadata_xml(), media_type="application/xml", headers=ODATA_HEADERS)


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
    s = entity_sets.entity_set(entity_set)
    total = await entity_sets.count(_reading(request), s, options=request.query_params)
    return PlainTextResponse(str(total), headers=ODATA_HEADERS)


@odata.get("/{entity_set}", summary="An entity set, with $filter, $select, $orderby, $top, $skip, $count")
async def odata_entity_set(request: Request, entity_set: str, _: Reader):
    s = entity_sets.entity_set(entity_set)
    server_max = request.app.state.runtime.settings.odata_page_size
    asked = _max_page_size(request)
    page_size = min(server_max, asked) if asked else server_max
    body = await entity_sets.page(
        _reading(request),
        s,
        options=request.query_params,
        items=request.query_params.multi_items(),
        base=_odata_base(request),
        page_size=page_size,
    )
    headers = dict(ODATA_HEADERS)
    if asked:
        headers["Preference-Applied"] = f"odata.maxpagesize={page_size}"
    return JSONResponse(body, headers=headers)


# The dashboard


@dashboard.get("/", response_class=HTMLResponse)
async def dashboard_page():
    """The page itself holds no figures: its script fetches them with the analyst's token."""
    html, policy = dashboard_html()
    return HTMLResponse(html, headers={**DASHBOARD_HEADERS, "Content-Security-Policy": policy})
