"""Reporting: a figure's time at 10,000 and at 1,000,000 requests; projection beside the raw consume rate.

    .venv/bin/python -m bench.reporting [--small 10000] [--large 1000000] [--events 10000]

1. Figures. Two fresh SQLite databases are filled as the projection leaves
   them: one fact row per request and the pre-aggregated counts made from
   those facts by the projection's own rules (`domain.request_keys`), for
   requests spread over the 25 days of April 2020 in the briefing's mix.
   Each figure is then asked for through the real app (auth, query, JSON) many
   times; the median and p90 are printed for both sizes and their ratio.
2. Projection. A topic is filled with the reporting-safe events of real-looking
   requests (`request.received`, then routed / accepted / fulfilled status
   events). In the same run: the raw rate (an aiokafka consumer in a fresh group
   reads the same messages, 500 a poll as the live consumer, no parsing, no
   database; median of three reads), the live service's consumer (one
   transaction per fetch, every partition in it, with its inbox rows), and
   `kent-together replay` (batches of 500 per transaction), each on a fresh database.

Rates are timed from the first message handled to the last, so the broker's
group join is not counted. Prints figures; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import func, insert, select

from services.reporting import domain, service
from services.reporting.app import ReportingSettings, consumed_topics, create_app
from services.reporting.models import request_counts, request_facts, tables
from shared.auth import mint_token
from shared.bus import EmbeddedBroker, ensure_topics, free_port
from shared.db import upgrade
from shared.events import AssignmentStatusChangedV1, RequestReceivedV1
from shared.settings import Topics
from suite import registry

APRIL = datetime(2020, 4, 1, tzinfo=UTC)
TYPES = (
    ["food"] * 55 + ["prescription"] * 27 + ["befriending"] * 8 + ["financial"] * 4 + ["practical"] * 4 + ["other"] * 2
)
CHANNELS = ["phone"] * 6 + ["online"] * 3 + ["partner", "email"]
CODES = list(domain.KENT_DISTRICTS) + ["E06000035"]
FIGURES = [
    ("requests by type, April", {"group_by": "type", "from": "2020-04-01", "to": "2020-04-26"}),
    ("requests by district", {"group_by": "district"}),
    ("requests by day, Thanet", {"group_by": "day", "district": "thanet"}),
    ("requests by status, one week", {"group_by": "status", "from": "2020-04-06", "to": "2020-04-13"}),
]


def synthetic_fact(rng: random.Random) -> dict:
    received = APRIL + timedelta(minutes=rng.randrange(25 * 24 * 60))
    code = rng.choice(CODES)
    status = rng.choice(["routed", "accepted", "in_progress", "fulfilled", "fulfilled", "fulfilled", "cancelled"])
    fact = domain.new_request_fact(str(uuid.UUID(int=rng.getrandbits(128))), str(uuid.UUID(int=rng.getrandbits(128))))
    fact.update(
        request_type=rng.choice(TYPES),
        channel=rng.choice(CHANNELS),
        urgency=rng.choice(["today", "this-week"]),
        district_code=code,
        district=domain.district_of(code),
        hub=domain.KENT_DISTRICTS.get(code),
        status=status,
        received_at=received,
        received_day=received.date(),
        routed_at=received + timedelta(minutes=5),
        accepted_at=received + timedelta(hours=rng.randint(1, 8)) if status != "routed" else None,
        accept_breached=rng.random() < 0.05,
        updated_at=received,
    )
    return fact


async def fill(url: str, size: int) -> None:
    """Facts and their counts, as the projection would have left them after `size` requests."""
    from shared.db import Database

    db = Database(url)
    rng = random.Random(size)
    counts: Counter = Counter()
    chunk = 20_000
    columns = service.REQUEST_FACT_COLUMNS
    async with db.engine.begin() as connection:
        for start in range(0, size, chunk):
            facts = [synthetic_fact(rng) for _ in range(min(chunk, size - start))]
            for fact in facts:
                for key in domain.request_keys(fact):
                    counts[key] += 1
            await connection.execute(insert(request_facts), [{c: f[c] for c in columns} for f in facts])
        await connection.execute(
            insert(request_counts),
            [{"day": k[0], "district": k[1], "dimension": k[2], "value": k[3], "count": n} for k, n in counts.items()],
        )
    async with db.engine.connect() as connection:
        rows = await connection.scalar(select(func.count()).select_from(request_counts))
    await db.dispose()
    print(f"  {size:>9,} requests: {rows:,} count rows")


async def time_figures(urls: dict[int, str], var_dir: Path, repeat: int) -> dict[int, dict[str, list[float]]]:
    """Both apps side by side, asked in turn, so a busy moment on the machine falls on both alike."""
    settings = {
        size: ReportingSettings(
            database_url=url, jwt_signing_key="bench-" + "k" * 40, run_consumers=False, log_json=False, var_dir=var_dir
        )
        for size, url in urls.items()
    }
    any_settings = next(iter(settings.values()))
    token = mint_token(
        signing_key=any_settings.signing_key(),
        role="analyst",
        issuer=any_settings.jwt_issuer,
        audience=any_settings.jwt_audience,
    )
    headers = {"Authorization": f"Bearer {token}"}
    timings: dict[int, dict[str, list[float]]] = {size: {} for size in urls}
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for size, config in settings.items():
            app = create_app(config)
            await stack.enter_async_context(app.router.lifespan_context(app))
            clients[size] = await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench")
            )
        for name, params in FIGURES:
            for client in clients.values():
                for _ in range(5):
                    (await client.get("/v1/figures/requests", params=params, headers=headers)).raise_for_status()
            for _ in range(repeat):
                for size, client in clients.items():
                    started = time.perf_counter()
                    response = await client.get("/v1/figures/requests", params=params, headers=headers)
                    timings[size].setdefault(name, []).append(time.perf_counter() - started)
                    assert response.status_code == 200
    return timings


def p(samples: list[float], q: float) -> float:
    return sorted(samples)[max(0, int(q * len(samples)) - 1)] * 1000


async def figures_benchmark(small: int, large: int, repeat: int, scratch: Path) -> None:
    print(f"Figures: {small:,} and {large:,} requests over 25 days, SQLite, {repeat} asks each")
    urls = {}
    for size in (small, large):
        url = urls[size] = f"sqlite+aiosqlite:///{scratch / f'figures-{size}.db'}"
        await asyncio.to_thread(upgrade, registry.spec("reporting").migrations, url)
        started = time.perf_counter()
        await fill(url, size)
        print(f"  filled in {time.perf_counter() - started:.0f}s")
    results = await time_figures(urls, scratch / "var", repeat)
    print(
        f"  {'figure':<32} {'median ' + format(small, ','):>16} {'median ' + format(large, ','):>18} {'ratio':>6}"
        f"   p90 small / large"
    )
    for name, _ in FIGURES:
        a, b = statistics.median(results[small][name]) * 1000, statistics.median(results[large][name]) * 1000
        print(
            f"  {name:<32} {a:>13.2f} ms {b:>15.2f} ms {b / a:>6.2f}   "
            f"{p(results[small][name], 0.9):.2f} / {p(results[large][name], 0.9):.2f} ms"
        )


def request_events(count: int) -> list:
    rng = random.Random(7)
    out = []
    for _ in range(count):
        referral, request, assignment = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        kind, code = rng.choice(TYPES), rng.choice(CODES[:-1])
        received = APRIL + timedelta(minutes=rng.randrange(25 * 24 * 60))
        out.append(
            RequestReceivedV1(
                referral_id=referral,
                request_id=request,
                request_type=kind,
                channel=rng.choice(CHANNELS),
                postcode_district="CT9",
                urgency="today",
                received_at=received,
            )
        )
        previous = None
        for status, after in (("routed", 0.1), ("accepted", 2), ("fulfilled", 20))[: rng.randint(1, 3)]:
            at = received + timedelta(hours=after)
            out.append(
                AssignmentStatusChangedV1(
                    assignment_id=assignment,
                    request_id=request,
                    referral_id=referral,
                    request_type=kind,
                    urgency="today",
                    status=status,
                    previous_status=previous,
                    hub=domain.KENT_DISTRICTS[code],
                    district_code=code,
                    received_at=received,
                    changed_at=at,
                    accepted_at=at if status == "accepted" else None,
                    closed_at=at if status == "fulfilled" else None,
                )
            )
            previous = status
    return out


async def projection_benchmark(events: int, scratch: Path) -> None:
    broker = EmbeddedBroker(port=free_port(), log_path=scratch / "broker.log").start()
    try:
        suffix = uuid.uuid4().hex[:8]
        topics = Topics(
            request_stats=f"bench.stats.{suffix}",
            assignment_status=f"bench.status.{suffix}",
            actions=f"bench.actions.{suffix}",
            dead_letter_prefix=f"bench.dlq.{suffix}.",
        )
        await ensure_topics(
            broker.bootstrap_servers, {t: 6 for t in (topics.request_stats, topics.assignment_status, topics.actions)}
        )
        requests = max(1, events * 10 // 30)
        produced = request_events(requests)
        producer = AIOKafkaProducer(
            bootstrap_servers=broker.bootstrap_servers, acks="all", enable_idempotence=False, linger_ms=5
        )
        await producer.start()
        for data in produced:
            topic = topics.request_stats if isinstance(data, RequestReceivedV1) else topics.assignment_status
            event = data.envelope(source="/bench")
            await producer.send(topic, value=event.to_bytes(), key=event.subject.encode())
        await producer.flush()
        await producer.stop()
        total = len(produced)
        print(f"\nProjection: {total:,} events ({requests:,} requests) on two topics of 6 partitions, embedded broker")

        # The same messages of the same two topics, read as the live consumer reads them
        # (a group, 500 records a poll), doing nothing with them. A read takes well under a
        # second, so one busy moment on the machine moves it a lot: the median of three.
        raw_rates = []
        for attempt in range(3):
            raw_rates.append(await raw_rate_of(broker.bootstrap_servers, topics, f"raw-{suffix}-{attempt}", total))
        raw_rate = statistics.median(raw_rates)
        print(
            f"  raw consume (aiokafka, no parsing, no database): {raw_rate:>9,.0f} events/s"
            f"  (median of {', '.join(f'{r:,.0f}' for r in raw_rates)})"
        )

        for database in ("sqlite", "postgres"):
            url = await fresh_database(database, scratch, suffix)
            settings = ReportingSettings(
                database_url=url,
                kafka_bootstrap_servers=broker.bootstrap_servers,
                topics=topics,
                consumer_group=f"reporting-{suffix}-{database}",
                jwt_signing_key="bench-" + "k" * 40,
                log_json=False,
                var_dir=scratch / "var",
            )
            app = create_app(settings)
            runtime = app.state.runtime
            async with app.router.lifespan_context(app):
                while await inbox_count(runtime) < total:
                    await asyncio.sleep(0.25)
                async with runtime.db.engine.connect() as connection:
                    low, high, transactions = (
                        await connection.execute(
                            select(
                                func.min(tables.inbox.c.processed_at),
                                func.max(tables.inbox.c.processed_at),
                                func.count(tables.inbox.c.processed_at.distinct()),
                            )
                        )
                    ).one()
            live_rate = total / max((high - low).total_seconds(), 1e-6)
            started = time.perf_counter()
            replayed = await service.replay(
                runtime.uow,
                inbox=tables.inbox,
                consumer=settings.consumer_group,
                bootstrap_servers=broker.bootstrap_servers,
                topics=consumed_topics(settings),
            )
            replay_rate = replayed / (time.perf_counter() - started)
            await runtime.db.dispose()
            print(
                f"  {database:<8} live consumer (a transaction per fetch):  {live_rate:>9,.0f} events/s"
                f"  ratio {live_rate / raw_rate:.3f}  ({transactions} transactions)"
            )
            print(
                f"  {database:<8} replay (500 events a transaction):      {replay_rate:>9,.0f} events/s"
                f"  ratio {replay_rate / raw_rate:.3f}  (includes the quiet second that ends it)"
            )
    finally:
        broker.stop()


async def raw_rate_of(bootstrap_servers: str, topics: Topics, group: str, total: int) -> float:
    raw = AIOKafkaConsumer(
        topics.request_stats,
        topics.assignment_status,
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
        max_poll_records=500,
    )
    await raw.start()
    try:
        seen, first = 0, None
        while seen < total:
            batches = await raw.getmany(timeout_ms=1000)
            for messages in batches.values():
                first = first or time.perf_counter()
                seen += len(messages)
        return total / (time.perf_counter() - first)
    finally:
        await raw.stop()


async def inbox_count(runtime) -> int:
    async with runtime.db.engine.connect() as connection:
        return await connection.scalar(select(func.count()).select_from(tables.inbox))


async def fresh_database(kind: str, scratch: Path, suffix: str) -> str:
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{scratch / f'projection-{suffix}.db'}"
    else:
        import asyncpg

        name = f"kt_bench_reporting_{suffix}"
        connection = await asyncpg.connect("postgresql://postgres@127.0.0.1:5432/test")
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await connection.execute(f'CREATE DATABASE "{name}"')
        await connection.close()
        url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
    await asyncio.to_thread(upgrade, registry.spec("reporting").migrations, url)
    return url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--only", choices=["figures", "projection"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kt-bench-reporting-") as scratch:
        if args.only != "projection":
            asyncio.run(figures_benchmark(args.small, args.large, args.repeat, Path(scratch)))
        if args.only != "figures":
            asyncio.run(projection_benchmark(args.events, Path(scratch)))


if __name__ == "__main__":
    main()
