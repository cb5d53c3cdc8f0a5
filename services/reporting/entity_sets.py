"""The OData v4 feed's entity sets: which tables it shows under which names, its CSDL, and reading a page.

`odata.py` reads the query options (`$filter`, `$orderby`, `$select`, skip
tokens) into SQL; this module says what they apply to and runs them. No HTTP:
`api.py` passes the options in and sends what comes back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Boolean, Date, Integer, Table, and_, func, select

from services.reporting import domain
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
from shared.db import UtcDateTime
from shared.uow import UnitOfWork

NAMESPACE = "KentTogether.Reporting"
CAPABILITIES = "https://oasis-tcs.github.io/odata-vocabularies/vocabularies/Org.OData.Capabilities.V1.xml"
CORE = "https://oasis-tcs.github.io/odata-vocabularies/vocabularies/Org.OData.Core.V1.xml"
PAGE_OPTIONS = frozenset({"$filter", "$select", "$orderby", "$top", "$skip", "$count", "$skiptoken", "$format"})
COUNT_OPTIONS = frozenset({"$filter", "$format"})


def _props(table: Table, edm: dict[str, str], names: dict[str, str]) -> dict[str, Property]:
    return {odata_name: Property(odata_name, table.c[column], edm[odata_name]) for odata_name, column in names.items()}


def _edm_of(table: Table, names: dict[str, str]) -> dict[str, str]:
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
        table: Table,
        columns: list[str] | dict[str, str],
        key: list[str],
        *,
        where: Any = None,
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


def entity_set(name: str) -> EntitySet:
    found = ENTITY_SETS.get(name)
    if found is None:
        raise ODataError("entity set", f"unknown {name!r}; one of {', '.join(ENTITY_SETS)}")
    return found


def service_document(base: str) -> dict[str, Any]:
    """The service document: every entity set, relative to `base` (the feed's root, ending in `/`)."""
    return {
        "@odata.context": f"{base}$metadata",
        "value": [{"name": s.name, "kind": "EntitySet", "url": s.name} for s in ENTITY_SETS.values()],
    }


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


def metadata_xml() -> str:
    """The CSDL: entity types and sets, with their Capabilities annotations."""
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
    return (
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


def _where(s: EntitySet, options: Mapping[str, str]) -> Any:
    conditions = [
        c
        for c in (s.where, parse_filter(options["$filter"], s.properties) if options.get("$filter") else None)
        if c is not None
    ]
    return and_(*conditions) if conditions else None


def _refuse_unknown(options: Mapping[str, str], known: frozenset[str], reason: str) -> None:
    for name in options:
        if name.startswith("$") and name not in known:
            raise ODataError(name, reason)


async def count(uow: UnitOfWork, s: EntitySet, *, options: Mapping[str, str]) -> int:
    """How many rows of the set match `$filter`."""
    _refuse_unknown(options, COUNT_OPTIONS, "is not supported on $count")
    where = _where(s, options)
    async with uow:
        return await _count(uow, s.table, where)


async def page(
    uow: UnitOfWork,
    s: EntitySet,
    *,
    options: Mapping[str, str],
    items: Sequence[tuple[str, str]],
    base: str,
    page_size: int,
) -> dict[str, Any]:
    """One page of the set as the feed's JSON body: its rows, `@odata.count` if asked, and the next page's link.

    `options` are the query options (the last of each name), `items` all of them in
    order (kept in the next link), `base` the feed's root and `page_size` the most rows a page holds.
    """
    _refuse_unknown(options, PAGE_OPTIONS, "is not supported here")
    where = _where(s, options)
    selected = parse_select(options["$select"], s.properties) if options.get("$select") else list(s.properties.values())
    order = parse_orderby(options["$orderby"], s.properties) if options.get("$orderby") else []
    count_wanted = options.get("$count", "false").lower()
    if count_wanted not in ("true", "false"):
        raise ODataError("$count", "must be true or false")
    # The key makes the order total, so a keyset names exactly one place in it.
    ordered = [p.name for p, _ in order]
    order += [(s.properties[k], False) for k in s.key if k not in ordered]
    top = parse_count(options.get("$top"), "$top")
    skip = parse_count(options.get("$skip"), "$skip") or 0
    after = None
    if options.get("$skiptoken"):
        token = decode_skiptoken(options["$skiptoken"], order=order)
        after, top, skip = after_row(order, token.after), token.remaining, 0
    want = page_size if top is None else min(page_size, top)
    # Sent or not, the order's columns are read: the next page's token is made from them.
    read = list(dict.fromkeys([*selected, *(p for p, _ in order)]))
    query = select(*[p.column for p in read]).select_from(s.table)
    if where is not None:
        query = query.where(where)
    if after is not None:
        query = query.where(after)
    query = query.order_by(*order_by_clause(order)).offset(skip).limit(want + 1)
    async with uow:
        found = (await uow.session.execute(query)).all()
        total = await _count(uow, s.table, where) if count_wanted == "true" else None
    more = len(found) > want
    rows = [{p.name: row[i] for i, p in enumerate(read)} for row in found[:want]]
    body: dict[str, Any] = {
        "@odata.context": f"{base}$metadata#{s.name}"
        + (f"({','.join(p.name for p in selected)})" if options.get("$select") else "")
    }
    if total is not None:
        body["@odata.count"] = total
    body["value"] = [{p.name: _odata_value(row[p.name]) for p in selected} for row in rows]
    remaining = None if top is None else top - len(rows)
    if more and rows and remaining != 0:
        next_token = encode_skiptoken(order=order, row=rows[-1], remaining=remaining)
        params = [(k, v) for k, v in items if k not in ("$skiptoken", "$skip", "$top")]
        body["@odata.nextLink"] = f"{base}{s.name}?{urlencode(params + [('$skiptoken', next_token)])}"
    return body


async def _count(uow: UnitOfWork, table: Table, where: Any) -> int:
    counting = select(func.count()).select_from(table)
    if where is not None:
        counting = counting.where(where)
    return int(await uow.session.scalar(counting) or 0)


def _odata_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return value
