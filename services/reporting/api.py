"""HTTP: figures as JSON or CSV, the OData v4 feed, and the dashboard page."""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import io
import re
from collections import Counter
from datetime import date, datetime, timezone
from email.utils import format_datetime
from importlib import resources
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import Boolean, Date, Integer

from services.reporting import domain, service
from services.reporting.models import action_facts, request_counts, request_facts
from services.reporting.odata import ODataError, Property, parse_count, parse_filter, parse_orderby, parse_select
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
Suppress = Annotated[bool | None, Query(description="Show counts of 1–4 as \"<5\" (the service may always do so)")]


def figure_route(path: str, **kwargs):
    """GET, and HEAD for a cheap change check (kept out of the OpenAPI document: same answer, no body)."""
    def register(endpoint):
        figures.head(path, include_in_schema=False)(endpoint)
        return figures.get(path, **kwargs)(endpoint)
    return register


def _span(start: date | None, end: date | None, district: str | None) -> domain.DateRange:
    errors = []
    if start and end and end <= start:
        errors.append({"field": "to", "in": "query", "reason": "must be after `from` (it is the first day not included)"})
    if district is not None and district not in domain.DISTRICTS:
        errors.append({"field": "district", "in": "query", "reason": f"unknown district; one of {', '.join(domain.DISTRICTS)}"})
    if errors:
        raise ValidationFailed(errors)
    return domain.DateRange(start, end)


def _wants_csv(request: Request, fmt: str | None) -> bool:
    if fmt:
        return fmt == "csv"
    accept = request.headers.get("accept", "")
    return "text/csv" in accept and "application/json" not in accept.split("text/csv")[0]


async def _figure(
    request: Request, *, model: str, figure: str, group_by: str | None, filters: dict, columns: list[str],
    compute, fmt: str | None, suppress: bool | None, volatile: str = "",
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
        headers["Last-Modified"] = format_datetime(updated.astimezone(timezone.utc), usegmt=True)
    media = "text/csv; charset=utf-8" if as_csv else "application/json"
    if_none_match = request.headers.get("if-none-match", "")
    if headers["ETag"] in [value.strip().removeprefix("W/") for value in if_none_match.split(",")] or if_none_match == "*":
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
        "as_at": updated.isoformat() if updated else None, "figure": figure, "group_by": group_by,
        "filters": {k: (v.isoformat() if isinstance(v, date) else v) for k, v in filters.items()},
        "suppressed": suppressed, "columns": columns, "rows": [_jsonable(row) for row in rows],
    }
    return JSONResponse(body, headers=headers)


def _jsonable(row: dict) -> dict:
    return {k: (v.isoformat() if isinstance(v, (date, datetime)) else v) for k, v in row.items()}


def _csv(columns: list[str], rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else (row[c].isoformat() if isinstance(row[c], (date, datetime)) else row[c])
                         for c in columns])
    return out.getvalue()


REQUEST_GROUPS = ("type", "district", "channel", "day", "week", "status", "hub", "urgency")


async def _counts(request: Request, *, dimension: str, group_by: str, span, district) -> list[dict]:
    def uow():
        return request.app.state.runtime.uow(reading=True)

    if group_by == "district":
        found = await service.request_counts_by(uow(), dimension=dimension, by_district=True, span=span, district=district)
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


@figure_route("/requests", responses=FIGURE_RESPONSES,
                   summary="Requests by type, district, channel, day, week, status, hub or urgency")
async def requests_figure(
    request: Request, _: Reader,
    group_by: Annotated[Literal[REQUEST_GROUPS], Query()] = "type",  # type: ignore[valid-type]
    start: From = None, end: To = None, district: District = None, format: Format = None, suppress: Suppress = None,
):
    span = _span(start, end, district)
    dimension = "type" if group_by in ("district", "day", "week") else group_by
    return await _figure(
        request, model="requests", figure="requests", group_by=group_by,
        filters={"from": start, "to": end, "district": district}, columns=[group_by, "count", "share"],
        compute=lambda: _counts(request, dimension=dimension, group_by=group_by, span=span, district=district),
        fmt=format, suppress=suppress,
    )


@figure_route("/referrals", responses=FIGURE_RESPONSES,
                   summary="Referrals (people) by channel, district, day or week")
async def referrals_figure(
    request: Request, _: Reader,
    group_by: Annotated[Literal["channel", "district", "day", "week"], Query()] = "channel",
    start: From = None, end: To = None, district: District = None, format: Format = None, suppress: Suppress = None,
):
    span = _span(start, end, district)
    return await _figure(
        request, model="requests", figure="referrals", group_by=group_by,
        filters={"from": start, "to": end, "district": district}, columns=[group_by, "count", "share"],
        compute=lambda: _counts(request, dimension=domain.REFERRAL_DIMENSION, group_by=group_by, span=span,
                                district=district),
        fmt=format, suppress=suppress,
    )


@figure_route("/daily", responses=FIGURE_RESPONSES,
                   summary="Requests per day, split by type (or channel, status, hub): the stacked chart")
async def daily_figure(
    request: Request, _: Reader,
    split_by: Annotated[Literal["type", "channel", "status", "hub", "urgency"], Query()] = "type",
    start: From = None, end: To = None, district: District = None, format: Format = None, suppress: Suppress = None,
):
    span = _span(start, end, district)

    async def compute():
        found = await service.daily_by(request.app.state.runtime.uow(reading=True), dimension=split_by, span=span, district=district)
        return [{"day": r["day"], split_by: r["value"], "count": r["count"]} for r in found]

    return await _figure(
        request, model="requests", figure="daily", group_by=split_by,
        filters={"from": start, "to": end, "district": district}, columns=["day", split_by, "count"],
        compute=compute, fmt=format, suppress=suppress,
    )


@figure_route("/sla", responses=FIGURE_RESPONSES,
                   summary="SLA breaches (requests not accepted, or not fulfilled, in time: `count`) and open "
                           "requests past a deadline now (`overdue_now`)")
async def sla_figure(request: Request, _: Reader, start: From = None, end: To = None, district: District = None,
                     format: Format = None, suppress: Suppress = None):
    span = _span(start, end, district)

    now = datetime.now(timezone.utc)

    async def compute():
        found = await service.request_counts_by(request.app.state.runtime.uow(reading=True), dimension="breach", span=span,
                                                district=district)
        counts = {r["key"]: r["count"] for r in found}
        overdue = await service.overdue_now(request.app.state.runtime.uow(reading=True), span=span, district=district,
                                            now=now)
        return [{"deadline": name, "count": counts.get(name, 0), "overdue_now": overdue[name]}
                for name in ("accept", "fulfil")]

    return await _figure(request, model="requests", figure="sla", group_by="deadline",
                         filters={"from": start, "to": end, "district": district},
                         columns=["deadline", "count", "overdue_now"], compute=compute, fmt=format, suppress=suppress,
                         volatile=now.strftime("%Y-%m-%dT%H:%M"))  # what is overdue moves on by the minute


@figure_route("/queues", responses=FIGURE_RESPONSES,
                   summary="Requests that went to the out-of-area queue or to triage")
async def queues_figure(request: Request, _: Reader, start: From = None, end: To = None, district: District = None,
                        format: Format = None, suppress: Suppress = None):
    span = _span(start, end, district)

    async def compute():
        found = await service.request_counts_by(request.app.state.runtime.uow(reading=True), dimension="queue", span=span,
                                                district=district)
        counts = {r["key"]: r["count"] for r in found}
        return [{"queue": name, "count": counts.get(name, 0)} for name in ("out_of_area", "triage")]

    return await _figure(request, model="requests", figure="queues", group_by="queue",
                         filters={"from": start, "to": end, "district": district}, columns=["queue", "count"],
                         compute=compute, fmt=format, suppress=suppress)


@figure_route("/timings", responses=FIGURE_RESPONSES,
                   summary="Hours from received to accepted and to fulfilled: median and 90th percentile")
async def timings_figure(request: Request, _: Reader, start: From = None, end: To = None, district: District = None,
                         format: Format = None, suppress: Suppress = None):
    span = _span(start, end, district)
    return await _figure(
        request, model="requests", figure="timings", group_by="measure",
        filters={"from": start, "to": end, "district": district},
        columns=["measure", "count", "median_hours", "p90_hours"],
        compute=lambda: service.timings(request.app.state.runtime.uow(reading=True), span=span, district=district),
        fmt=format, suppress=suppress,
    )


@figure_route("/backlog", responses=FIGURE_RESPONSES,
                   summary="Open requests by how long they have waited")
async def backlog_figure(request: Request, _: Reader, start: From = None, end: To = None, district: District = None,
                         format: Format = None, suppress: Suppress = None):
    span = _span(start, end, district)
    now = datetime.now(timezone.utc)
    return await _figure(
        request, model="requests", figure="backlog", group_by="age",
        filters={"from": start, "to": end, "district": district}, columns=["age", "count", "oldest_hours"],
        compute=lambda: service.backlog(request.app.state.runtime.uow(reading=True), span=span, district=district, now=now),
        fmt=format, suppress=suppress, volatile=now.strftime("%Y-%m-%dT%H:%M"),  # ages move on by the minute
    )


ACTION_GROUPS = ("cell", "theme", "status", "rag", "priority", "timescale")


@figure_route("/actions", responses=FIGURE_RESPONSES,
                   summary="Recovery-plan actions by cell, theme, status, RAG, priority or timescale")
async def actions_figure(
    request: Request, _: Reader,
    group_by: Annotated[Literal[ACTION_GROUPS], Query()] = "cell",  # type: ignore[valid-type]
    start: Annotated[date | None, Query(alias="from", description="Due on or after this day")] = None,
    end: Annotated[date | None, Query(alias="to", description="Due before this day")] = None,
    format: Format = None, suppress: Suppress = None,
):
    span = _span(start, end, None)
    today = datetime.now(timezone.utc).date()

    async def compute():
        groups: dict[str, list[dict]] = {}
        for action in await service.actions(request.app.state.runtime.uow(reading=True)):
            if (span.start and action["due_date"] < span.start) or (span.end and action["due_date"] >= span.end):
                continue
            groups.setdefault(action[group_by] or "none", []).append(action)
        rows = [{group_by: key, "count": len(items),
                 "overdue": sum(domain.action_is_overdue(a, today) for a in items),
                 "progress": round(sum(a["progress"] for a in items) / len(items), 1)}
                for key, items in sorted(groups.items())]
        return domain.shares(rows)

    return await _figure(
        request, model="actions", figure="actions", group_by=group_by, filters={"from": start, "to": end},
        columns=[group_by, "count", "share", "overdue", "progress"], compute=compute, fmt=format,
        suppress=suppress, volatile=today.isoformat(),
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
    def __init__(self, name: str, type_name: str, table, columns: list[str], key: list[str]):
        names = {c: c for c in columns}
        self.name, self.type_name, self.table, self.key = name, type_name, table, key
        self.properties = _props(table, _edm_of(table, names), names)


ENTITY_SETS = {
    s.name: s for s in (
        EntitySet("RequestFacts", "RequestFact", request_facts,
                  [c.name for c in request_facts.columns if c.name != "updated_at"], ["request_id"]),
        EntitySet("DailyRequestCounts", "DailyRequestCount", request_counts,
                  ["day", "district", "dimension", "value", "count"], ["day", "district", "dimension", "value"]),
        EntitySet("Actions", "Action", action_facts,
                  [c.name for c in action_facts.columns if c.name != "updated_at"], ["action_id"]),
    )
}
NAMESPACE = "KentTogether.Reporting"


@odata.get("/", summary="OData service document: the entity sets")
async def odata_service_document(request: Request, _: Reader):
    base = str(request.url_for("odata_service_document"))
    return JSONResponse(
        {"@odata.context": f"{base}$metadata",
         "value": [{"name": s.name, "kind": "EntitySet", "url": s.name} for s in ENTITY_SETS.values()]},
        headers={"OData-Version": "4.0"},
    )


@odata.get("/$metadata", summary="OData CSDL: entity types and sets")
async def odata_metadata(_: Reader):
    types, sets = [], []
    for s in ENTITY_SETS.values():
        keys = "".join(f'<PropertyRef Name="{k}"/>' for k in s.key)
        props = "".join(
            f'<Property Name="{p.name}" Type="{p.edm}" Nullable="{"false" if p.name in s.key else "true"}"/>'
            for p in s.properties.values())
        types.append(f'<EntityType Name="{s.type_name}"><Key>{keys}</Key>{props}</EntityType>')
        sets.append(f'<EntitySet Name="{s.name}" EntityType="{NAMESPACE}.{s.type_name}"/>')
    xml = (
        '<?xml version="1.0" encoding="utf-8"?>'
        '<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0"><edmx:DataServices>'
        f'<Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="{NAMESPACE}">'
        + "".join(types)
        + f'<EntityContainer Name="Container">{"".join(sets)}</EntityContainer>'
        "</Schema></edmx:DataServices></edmx:Edmx>"
    )
    return Response(xml, media_type="application/xml", headers={"OData-Version": "4.0"})


@odata.get("/{entity_set}", summary="An entity set, with $filter, $select, $orderby, $top, $skip, $count")
async def odata_entity_set(request: Request, entity_set: str, _: Reader):
    s = ENTITY_SETS.get(entity_set)
    if s is None:
        raise ODataError("entity set", f"unknown {entity_set!r}; one of {', '.join(ENTITY_SETS)}")
    q = request.query_params
    known = {"$filter", "$select", "$orderby", "$top", "$skip", "$count", "$skiptoken", "$format"}
    for name in q:
        if name.startswith("$") and name not in known:
            raise ODataError(name, "is not supported here")
    where = parse_filter(q["$filter"], s.properties) if q.get("$filter") else None
    selected = parse_select(q["$select"], s.properties) if q.get("$select") else list(s.properties.values())
    order = parse_orderby(q["$orderby"], s.properties) if q.get("$orderby") else []
    top = parse_count(q.get("$top"), "$top")
    skip = parse_count(q.get("$skip"), "$skip") or 0
    skiptoken = parse_count(q.get("$skiptoken"), "$skiptoken") or 0
    count_wanted = q.get("$count", "false").lower()
    if count_wanted not in ("true", "false"):
        raise ODataError("$count", "must be true or false")
    # The key makes the order total, so pages never repeat or miss a row.
    ordered = [name for name, _ in ((p.name, d) for p, d in order)]
    order += [(s.properties[k], False) for k in s.key if k not in ordered]
    page_size = request.app.state.runtime.settings.odata_page_size
    offset = skip + skiptoken
    want = page_size if top is None else max(0, min(page_size, top - skiptoken))
    rows, total = await service.odata_page(
        request.app.state.runtime.uow(reading=True), table=s.table, where=where, columns=[p.column for p in selected],
        order=[(p.column, d) for p, d in order], offset=offset, limit=want + 1, count=count_wanted == "true",
    )
    more = len(rows) > want and (top is None or skiptoken + want < top)
    rows = rows[:want]
    base = str(request.url_for("odata_service_document"))
    body: dict[str, Any] = {"@odata.context": f"{base}$metadata#{s.name}"
                            + (f"({','.join(p.name for p in selected)})" if q.get("$select") else "")}
    if total is not None:
        body["@odata.count"] = total
    body["value"] = [{p.name: _odata_value(row[i]) for i, p in enumerate(selected)} for row in rows]
    if more and want > 0:
        params = [(k, v) for k, v in q.multi_items() if k != "$skiptoken"] + [("$skiptoken", str(skiptoken + want))]
        body["@odata.nextLink"] = f"{base}{s.name}?{urlencode(params)}"
    return JSONResponse(body, headers={"OData-Version": "4.0"})


def _odata_value(value):
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value


# The dashboard


@dashboard.get("/", response_class=HTMLResponse)
async def dashboard_page():
    """The page itself holds no figures: its script fetches them with the analyst's token."""
    html, policy = _dashboard()
    return HTMLResponse(html, headers={"Cache-Control": "no-cache", "X-Frame-Options": "DENY",
                                       "Referrer-Policy": "no-referrer", "Content-Security-Policy": policy})


@functools.cache
def _dashboard() -> tuple[str, str]:
    """The page, and a policy that lets run only its own inline script and style (by their hashes)."""
    html = resources.files("services.reporting").joinpath("dashboard.html").read_text()

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)

    policy = (f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
              "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
    return html, policy
