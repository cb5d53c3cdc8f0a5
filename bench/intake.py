"""Durable referral intake on PostgreSQL beside a bare FastAPI endpoint, in one run.

    make bench            (or .venv/bin/python -m bench.intake --seconds 10)

Both servers are real uvicorn processes on this machine; the load comes from
wrk (installed from Debian's packages if missing) posting a different
resident each time. The durable endpoint authenticates, validates, checks for
duplicates, writes the referral, its requests and their outbox events in one
PostgreSQL transaction, and answers 201 only after the commit; the outbox
relay publishes to the embedded broker meanwhile. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import asyncpg

from shared.auth import mint_token
from shared.bus import EmbeddedBroker, free_port, port_open
from shared.db import upgrade
from shared.kafka_security import KafkaSecurity
from suite import registry
from suite.supervisor import create_planned_topics

ADMIN_DSN = os.environ.get("KT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
HERE = Path(__file__).parent
SIGNING_KEY = "bench-signing-key-" + "b" * 32


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk (Debian package) for the load …", flush=True)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk")


def start_server(target: str, port: int, env: dict, *, factory: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "uvicorn", target, "--port", str(port), "--no-access-log", "--log-level", "error"]
    if factory:
        command.append("--factory")
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while not port_open("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{target} did not start")
        time.sleep(0.1)
    return process


def run_wrk(wrk: str, url: str, *, seconds: int, connections: int, token: str) -> dict:
    output = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(HERE / "post.lua"), url],
        env={**os.environ, "KT_BENCH_TOKEN": token},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = int(re.search(r"(\d+) requests in", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "total": total,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "p50": re.search(r"^\s+50%\s+(\S+)", output, re.M).group(1),
        "p99": re.search(r"^\s+99%\s+(\S+)", output, re.M).group(1),
    }


async def admin(statement: str) -> None:
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def count(dsn: str, query: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(query)
    finally:
        await connection.close()


async def event_latency(url: str, bootstrap: str, token: str, *, count: int) -> list[float]:
    """Seconds from each 201 to its referral.received event reaching a consumer, one referral at a time."""
    import httpx
    from aiokafka import AIOKafkaConsumer

    from shared.events import CloudEvent
    from shared.settings import Topics

    consumer = AIOKafkaConsumer(
        Topics().referrals,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="latest",
        metadata_max_age_ms=500,
        fetch_max_wait_ms=20,
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=500)  # assigned, positioned at the end
    answered: dict[str, float] = {}
    seen: dict[str, float] = {}

    async def watch():
        while True:
            for messages in (await consumer.getmany(timeout_ms=100)).values():
                now = time.perf_counter()
                for message in messages:
                    seen.setdefault(CloudEvent.from_bytes(message.value).data["referral_id"], now)

    watcher = asyncio.create_task(watch())
    body = (HERE / "one_referral.json").read_text()
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    ) as http:
        for i in range(count):
            response = await http.post(url, content=body.replace("RESIDENT", f"Latency {i} {time.time()}"))
            answered[response.json()["id"]] = time.perf_counter()
            await asyncio.sleep(0.01)  # 100 referrals/s
    deadline = time.perf_counter() + 10
    while len(seen.keys() & answered.keys()) < len(answered) and time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
    watcher.cancel()
    await consumer.stop()
    return sorted(seen[i] - answered[i] for i in answered if i in seen) + [float("inf")] * (
        len(answered.keys() - seen.keys())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()

    wrk = ensure_wrk()
    database = f"kt_bench_{os.getpid()}"
    asyncio.run(admin(f'CREATE DATABASE "{database}"'))
    base = ADMIN_DSN.rsplit("/", 1)[0]
    url = f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{database}"
    upgrade(registry.spec("referrals").migrations, url)
    broker = EmbeddedBroker(port=free_port()).start()
    # As `make run` does: the relay publishes only to topics the plan has created.
    asyncio.run(create_planned_topics(broker.bootstrap_servers, security=KafkaSecurity()))
    env = {
        **os.environ,
        "REFERRALS_DATABASE_URL": url,
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "KT_JWT_SIGNING_KEY": SIGNING_KEY,
        "KT_VAR_DIR": "/tmp/kt-bench-var",
        "KT_LOG_LEVEL": "ERROR",
        "KAFKA_IDEMPOTENT_PRODUCER": "false",  # the embedded broker (tansu) refuses InitProducerId
        # One token drives the whole load: the per-client rate limit would measure itself.
        "REFERRALS_RATE_LIMIT_PER_MINUTE": "0",
    }
    token = mint_token(
        signing_key=SIGNING_KEY,
        role="call-centre",
        issuer="kent-together-dev",
        audience="kent-together",
        subject="bench",
    )
    bare_port, durable_port, split_port = free_port(), free_port(), free_port()
    split_env = {**env, "REFERRALS_RUN_RELAY": "false"}
    servers = [
        start_server("bench.bare_app:app", bare_port, env, factory=False),
        start_server("services.referrals.app:create_app", durable_port, env, factory=True),
        start_server("services.referrals.app:create_app", split_port, split_env, factory=True),
        # The production topology: the outbox relay as its own process.
        subprocess.Popen(
            [sys.executable, "-m", "suite.cli", "relay", "referrals"],
            env=split_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        ),
    ]
    try:
        bare_url = f"http://127.0.0.1:{bare_port}/v1/referrals"
        durable_url = f"http://127.0.0.1:{durable_port}/v1/referrals"
        split_url = f"http://127.0.0.1:{split_port}/v1/referrals"
        for warm in (bare_url, durable_url, split_url):
            run_wrk(wrk, warm, seconds=2, connections=args.connections, token=token)
        bare = run_wrk(wrk, bare_url, seconds=args.seconds, connections=args.connections, token=token)
        durable = run_wrk(wrk, durable_url, seconds=args.seconds, connections=args.connections, token=token)
        split = run_wrk(wrk, split_url, seconds=args.seconds, connections=args.connections, token=token)
        latencies = asyncio.run(event_latency(durable_url, broker.bootstrap_servers, token, count=100))
        time.sleep(2)
        dsn = f"{base}/{database}"
        stored = asyncio.run(count(dsn, "SELECT count(*) FROM referrals"))
        backlog = asyncio.run(count(dsn, "SELECT count(*) FROM outbox WHERE published_at IS NULL"))
    finally:
        for server in servers:
            server.terminate()
            server.wait()
        broker.stop()
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))

    print()
    print(f"Referral intake, {args.connections} connections, {args.seconds}s each, {os.cpu_count()} cores")
    print(f"{'endpoint':<44}{'req/s':>9}{'p50':>10}{'p99':>10}{'non-2xx':>9}")
    print(
        f"{'bare FastAPI, validation only':<44}{bare['rps']:>9.0f}{bare['p50']:>10}{bare['p99']:>10}{bare['non_2xx']:>9}"
    )
    print(
        f"{'durable: PostgreSQL + outbox, 201 on commit':<44}{durable['rps']:>9.0f}{durable['p50']:>10}{durable['p99']:>10}{durable['non_2xx']:>9}"
    )
    print(
        f"{'durable, relay as its own process':<44}{split['rps']:>9.0f}{split['p50']:>10}{split['p99']:>10}{split['non_2xx']:>9}"
    )
    print(
        f"ratio durable / bare: {durable['rps'] / bare['rps']:.2f}; with the relay apart: "
        f"{split['rps'] / bare['rps']:.2f}  (target 0.50)"
    )
    print(f"referrals stored: {stored} (warm-up included); outbox rows still unpublished 2s after: {backlog}")
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"201 -> event seen by a consumer, {len(latencies)} referrals at ~100/s: "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
