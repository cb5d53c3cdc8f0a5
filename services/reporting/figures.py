"""The figures: what each one answers, read from the read models. No HTTP here.

Each figure is a function over a reading unit of work: it opens it once (so a
figure reads one consistent moment of the read models) and returns its rows,
plain dicts keyed by the figure's columns. `api.py` only turns them into JSON
or CSV answers; a BI tool or a test may call them directly.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from services.reporting import domain
from services.reporting.models import action_facts, projection_state, request_counts, request_facts
from shared.uow import UnitOfWork

Row = dict[str, Any]

REQUEST_GROUPS = ("type", "district", "channel", "day", "week", "status", "hub", "urgency")
REFERRAL_GROUPS = ("channel", "district", "day", "week")
DAILY_SPLITS = ("type", "channel", "status", "hub", "urgency")
ACTION_GROUPS = ("cell", "theme", "status", "rag", "priority", "timescale")
DEADLINES = ("accept", "fulfil")
QUEUES = ("out_of_area", "triage")

ACCEPT_STAGE = ("routed", "triage", "out_of_area")
FULFIL_STAGE = ("accepted", "in_progress")


async def state(uow: UnitOfWork, model: str) -> tuple[int, datetime | None]:
    """(version, last change) of a read model: what ETag and Last-Modified are made from."""
    async with uow:
        row = (
            await uow.session.execute(
                select(projection_state.c.version, projection_state.c.updated_at).where(
                    projection_state.c.model == model
                )
            )
        ).first()
    return (row.version, row.updated_at) if row else (0, None)


async def requests(uow: UnitOfWork, *, group_by: str, span: domain.DateRange, district: str | None) -> list[Row]:
    """Requests by one of `REQUEST_GROUPS`, with each group's share (by district, day or week: all types summed)."""
    dimension = "type" if group_by in ("district", "day", "week") else group_by
    async with uow:
        return await _grouped_counts(uow, dimension=dimension, group_by=group_by, span=span, district=district)


async def referrals(uow: UnitOfWork, *, group_by: str, span: domain.DateRange, district: str | None) -> list[Row]:
    """Referrals (people, not requests) by one of `REFERRAL_GROUPS`, with each group's share."""
    async with uow:
        return await _grouped_counts(
            uow, dimension=domain.REFERRAL_DIMENSION, group_by=group_by, span=span, district=district
        )


async def daily(uow: UnitOfWork, *, split_by: str, span: domain.DateRange, district: str | None) -> list[Row]:
    """Counts by day and a dimension's value: the stacked chart."""
    c = request_counts.c
    query = (
        select(c.day, c.value, c.count)
        .where(c.dimension == split_by, c.district == (district or domain.ALL_DISTRICTS), c.count > 0)
        .order_by(c.day, c.value)
    )
    async with uow:
        found = (await uow.session.execute(_range(query, c.day, span))).all()
    return [{"day": row.day, split_by: row.value, "count": int(row._mapping["count"])} for row in found]


async def sla(uow: UnitOfWork, *, span: domain.DateRange, district: str | None, now: datetime) -> list[Row]:
    """SLA breaches by deadline (`count`, escalated when it passed) and open requests past it now (`overdue_now`)."""
    async with uow:
        counts = {r["key"]: r["count"] for r in await _counts_by(uow, dimension="breach", span=span, district=district)}
        overdue = await _overdue_now(uow, span=span, district=district, now=now)
    return [{"deadline": name, "count": counts.get(name, 0), "overdue_now": overdue[name]} for name in DEADLINES]


async def queues(uow: UnitOfWork, *, span: domain.DateRange, district: str | None) -> list[Row]:
    """Requests that went to the out-of-area queue or to triage."""
    async with uow:
        counts = {r["key"]: r["count"] for r in await _counts_by(uow, dimension="queue", span=span, district=district)}
    return [{"queue": name, "count": counts.get(name, 0)} for name in QUEUES]


async def series(uow: UnitOfWork, *, span: domain.DateRange, district: str | None) -> list[Row]:
    """Recurring requests by frequency: series started (`series`) and every occurrence they made (`occurrences`)."""
    async with uow:
        started = {
            r["key"]: r["count"]
            for r in await _counts_by(uow, dimension=domain.SERIES_DIMENSION, span=span, district=district)
        }
        made = {
            r["key"]: r["count"]
            for r in await _counts_by(uow, dimension=domain.RECURRING_DIMENSION, span=span, district=district)
        }
    return [
        {"frequency": f, "series": started.get(f, 0), "occurrences": made.get(f, 0)}
        for f in sorted(set(domain.FREQUENCIES) | set(started) | set(made))
    ]


async def timings(uow: UnitOfWork, *, span: domain.DateRange, district: str | None) -> list[Row]:
    """Time to accept and to fulfil, in hours: median and p90, from the facts (exact)."""
    f = request_facts.c
    async with uow:
        accepted = (
            await uow.session.execute(
                _fact_filters(select(f.received_at, f.accepted_at).where(f.accepted_at.is_not(None)), span, district)
            )
        ).all()
        fulfilled = (
            await uow.session.execute(
                _fact_filters(
                    select(f.received_at, f.closed_at).where(f.status == "fulfilled", f.closed_at.is_not(None)),
                    span,
                    district,
                )
            )
        ).all()
    rows = []
    for measure, pairs in (("accept", accepted), ("fulfil", fulfilled)):
        hours = sorted((end - start).total_seconds() / 3600 for start, end in pairs)
        median, p90 = domain.percentile(hours, 0.5), domain.percentile(hours, 0.9)
        rows.append(
            {
                "measure": measure,
                "count": len(hours),
                "median_hours": None if median is None else round(median, 3),
                "p90_hours": None if p90 is None else round(p90, 3),
            }
        )
    return rows


async def backlog(uow: UnitOfWork, *, span: domain.DateRange, district: str | None, now: datetime) -> list[Row]:
    """Open requests by how long they have waited since they came in."""
    f = request_facts.c
    query = _fact_filters(
        select(f.received_at).where(f.status.not_in(domain.CLOSED), f.received_at.is_not(None)), span, district
    )
    async with uow:
        received = (await uow.session.execute(query)).scalars().all()
    counts: Counter[str] = Counter()
    oldest: dict[str, datetime] = {}  # each band's own oldest request
    for at in received:
        band = domain.age_band(now - at)
        counts[band] += 1
        if band not in oldest or at < oldest[band]:
            oldest[band] = at
    return [
        {
            "age": label,
            "count": counts.get(label, 0),
            "oldest_hours": round((now - oldest[label]).total_seconds() / 3600, 3) if label in oldest else None,
        }
        for _, label in domain.BACKLOG_AGES
    ]


async def actions(uow: UnitOfWork, *, group_by: str, span: domain.DateRange, today: date) -> list[Row]:
    """The recovery plan's actions due in the range, by one of `ACTION_GROUPS`: count, share, overdue, progress."""
    async with uow:
        found = (
            await uow.session.execute(select(action_facts).order_by(action_facts.c.cell, action_facts.c.number))
        ).all()
    groups: dict[str, list[Row]] = {}
    for action in (dict(row._mapping) for row in found):
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


def day_range(span: domain.DateRange, days: list[date]) -> list[date]:
    """Every day from the range's start (or the first day seen) to its end: days with none show 0."""
    if not days and (span.start is None or span.end is None):
        return []
    first = span.start or min(days)
    last = (span.end - timedelta(days=1)) if span.end else max(days)
    if (last - first).days > 3660:
        last = first + timedelta(days=3660)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def as_csv(columns: list[str], rows: list[Row]) -> str:
    """A figure as CSV: a header of its columns even with no rows, dates as ISO 8601, nothing for None."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_csv_value(row.get(c)) for c in columns])
    return out.getvalue()


def as_json(row: Row) -> Row:
    """A figure's row with its dates as ISO 8601."""
    return {k: (v.isoformat() if isinstance(v, (date, datetime)) else v) for k, v in row.items()}


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    return value.isoformat() if isinstance(value, (date, datetime)) else value


async def _grouped_counts(
    uow: UnitOfWork, *, dimension: str, group_by: str, span: domain.DateRange, district: str | None
) -> list[Row]:
    if group_by == "district":
        found = await _counts_by(uow, dimension=dimension, by_district=True, span=span, district=district)
        rows = [{"district": r["key"], "count": r["count"]} for r in found]
    elif group_by in ("day", "week"):
        found = await _counts_by(uow, dimension=dimension, by_day=True, span=span, district=district)
        by_day = {r["key"]: r["count"] for r in found}
        days = day_range(span, list(by_day))
        if group_by == "day":
            rows = [{"day": d, "count": by_day.get(d, 0)} for d in days]
        else:
            weeks: Counter[date] = Counter()
            for d in days:
                weeks[domain.week_of(d)] += by_day.get(d, 0)
            rows = [{"week": w, "count": n} for w, n in sorted(weeks.items())]
    else:
        found = await _counts_by(uow, dimension=dimension, span=span, district=district)
        rows = [{group_by: r["key"], "count": r["count"]} for r in found]
    return domain.shares(rows)


def _range(query: Any, column: Any, span: domain.DateRange) -> Any:
    if span.start is not None:
        query = query.where(column >= span.start)
    if span.end is not None:
        query = query.where(column < span.end)
    return query


async def _counts_by(
    uow: UnitOfWork,
    *,
    dimension: str,
    by_day: bool = False,
    by_district: bool = False,
    span: domain.DateRange,
    district: str | None,
) -> list[Row]:
    """Counts from the aggregates: by a dimension's values, or by day/district (summing `dimension`)."""
    c = request_counts.c
    if by_district:
        key = c.district
        where_district = c.district != domain.ALL_DISTRICTS
        if district:
            where_district = c.district == district
    else:
        key = c.day if by_day else c.value
        where_district = c.district == (district or domain.ALL_DISTRICTS)
    query = (
        select(key.label("key"), func.sum(c.count).label("count"))
        .where(c.dimension == dimension, where_district)
        .group_by(key)
        .order_by(key)
    )
    found = (await uow.session.execute(_range(query, c.day, span))).all()
    return [{"key": row.key, "count": int(row._mapping["count"])} for row in found if row._mapping["count"]]


def _fact_filters(query: Any, span: domain.DateRange, district: str | None) -> Any:
    query = _range(query, request_facts.c.received_day, span)
    if district:
        query = query.where(request_facts.c.district == district)
    return query


async def _overdue_now(
    uow: UnitOfWork, *, span: domain.DateRange, district: str | None, now: datetime
) -> dict[str, int]:
    """Open requests past a deadline now, by the deadline they wait on: each counted once.

    Beside the breaches (escalated when a deadline passed): a backfilled case's deadline
    passed before it was recorded, so it was never escalated, and is overdue all the same.
    """
    f = request_facts.c
    waiting_accept = f.status.in_(ACCEPT_STAGE) & (f.accept_due_at < now)
    waiting_fulfil = (
        f.status.in_(FULFIL_STAGE) | (f.status.in_(ACCEPT_STAGE) & ~func.coalesce(waiting_accept, False))
    ) & (f.fulfil_due_at < now)
    query = _fact_filters(
        select(func.count().filter(waiting_accept), func.count().filter(waiting_fulfil)).select_from(request_facts),
        span,
        district,
    )
    accept, fulfil = (await uow.session.execute(query)).one()
    return {"accept": accept or 0, "fulfil": fulfil or 0}
