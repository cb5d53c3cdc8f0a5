"""What a resident experiences: a referral's POST against its requests' arrival at their hubs, through the whole suite.

    .venv/bin/python -m bench.pipeline [--rate 100] [--seconds 20] [--database sqlite|postgres]
                                       [--sustained-seconds 10] [--connections 32]

It starts the suite as `make run` starts it (`kent-together run`: every service,
the embedded broker, SQLite files) on free ports in a scratch directory, so it
never meets a `make run` already going. Then:

1. **Fixed rate** (open loop): `--rate` referrals a second for `--seconds`, each
   with 1 or 2 requests at a real Kent postcode, sent on schedule whether or
   not earlier ones were answered (a lean HTTP/1.1 client: pre-encoded bodies,
   kept-alive connections). Each request's latency is its referral's POST send
   time to its `assignment.routed` event on its hub's Kafka topic (the record's
   timestamp: when fulfilment's relay sent it, the producer's CreateTime), to the
   moment a hub system reading the topic gets it (fetch wait 100 ms), and to the
   moment it shows in the hub's pull feed (`GET /v1/hubs/{hub}/feed`, each hub
   polled every `--feed-poll` seconds, so that figure is coarse by up to that
   much). A watcher in a second process reads every hub topic and polls the
   feeds, so the generator's own timing is not disturbed.

   The watcher is load on the machine under test, so it polls as a hub would:
   until 2026-12-01 it fetched with a 5 ms wait and polled each feed four times
   a second, which cost the embedded broker ~320 and fulfilment ~280 ms of CPU
   a second (a third of this 2-core machine) before any referral came.
2. **Sustained** (closed loop, `--sustained-seconds`): `--connections` front
   ends post as fast as intake answers; the figure is referrals ÷ (last
   request on its hub topic − first POST): the rate the whole pipeline keeps up
   with, lag drained. (An open-loop run above that rate would only see its lag grow.)

Prints p50 / p99 / max, the rate held, every request that never arrived, the
machine's load average, each process's CPU per referral, and the same net of
its idle baseline (`--idle-seconds` with no load before each phase, the watcher
polling: what polls cost a second, which a longer phase amortises over the same
referrals); asserts nothing about time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from services.fulfilment.hubs import KENT_HUBS
from services.fulfilment.postcodes import PostcodeDirectory
from shared.bus import free_port, port_open
from shared.settings import Topics
from tests.support.suite import Suite

SERVICE_PORTS = {"referrals": 8001, "fulfilment": 8002, "actions": 8003, "reporting": 8004, "web": 8005}
ADMIN_DSN = os.environ.get("KT_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
TYPES = (
    ["food"] * 55 + ["prescription"] * 27 + ["befriending"] * 8 + ["financial"] * 4 + ["practical"] * 4 + ["other"] * 2
)


# --- the suite, as `make run` starts it --------------------------------------------------


def free_offset(rng: random.Random) -> int:
    """A port offset at which every service port (and its neighbours) is free."""
    for _ in range(200):
        offset = rng.randrange(20000, 50000, 10)
        if not any(port_open("127.0.0.1", p + offset) for p in range(8000, 8010)):
            return offset
    raise RuntimeError("no free port range found")


class RunningSuite(Suite):
    """The suite as `make run` starts it (tests/support/suite.py, as the fault suite uses), on PostgreSQL if asked."""

    def __init__(self, var_dir: Path, *, database: str):
        super().__init__(var_dir=var_dir, port_offset=free_offset(random.Random()), broker_port=free_port())
        self.env.pop("KT_BROKER", None)  # the embedded default, as `make run`
        self.databases: list[str] = []
        if database == "postgres":
            for name in ("referrals", "fulfilment", "actions", "reporting"):
                db = f"kt_bench_pipeline_{name}"
                _recreate_database(db)
                self.databases.append(db)
                self.env[f"{name.upper()}_DATABASE_URL"] = f"postgresql+asyncpg://{_pg_hostpart()}/{db}"

    def service_url(self, service: str) -> str:
        return self.url(SERVICE_PORTS[service])

    def pids(self) -> dict[str, int]:
        """Each service's uvicorn process, for `py-spy` (printed so a profile can be taken mid-run)."""
        found = {}
        for name in SERVICE_PORTS:
            try:
                found[name] = self.service_pid(name)
            except (IndexError, ValueError):
                pass
        return found

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) so far of each process of the suite, by what it is: a service, the broker."""
        tick = os.sysconf("SC_CLK_TCK")
        found: dict[str, float] = {}
        todo = [self.process.pid]
        while todo:
            pid = todo.pop()
            children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
            todo += [int(c) for c in children]
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = next((n for n in SERVICE_PORTS if f"services.{n}.app" in cmdline), None)
            name = name or ("broker" if "tansu" in cmdline or "kafka" in cmdline.lower() else "supervisor")
            found[name] = found.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
        return found

    def stop(self) -> None:
        super().stop()
        for db in self.databases:
            try:
                _drop_database(db)
            except Exception:
                pass


def _pg_hostpart() -> str:
    return ADMIN_DSN.split("://", 1)[1].rsplit("/", 1)[0]


def _recreate_database(name: str) -> None:
    import asyncpg

    async def go():
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(go())


def _drop_database(name: str) -> None:
    import asyncpg

    async def go():
        conn = await asyncpg.connect(ADMIN_DSN)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(go())


# --- the load: pre-encoded referrals, a lean HTTP/1.1 client --------------------------------


def kent_postcodes(seed: int = 16) -> list[str]:
    """Real postcodes of Kent's 12 districts (the fulfilment service's own directory), a few hundred of each."""
    directory = PostcodeDirectory.load()
    rng = random.Random(seed)
    chosen: list[str] = []
    for hub in KENT_HUBS:
        codes = directory.postcodes(district_code=hub.district_code)
        chosen += rng.sample(codes, min(300, len(codes)))
    return chosen


def bodies(count: int, *, seed: int, postcodes: list[str]) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        kinds = sorted(set(rng.sample(TYPES, k=rng.choice([1, 2]))))
        out.append(
            json.dumps(
                {
                    "channel": "phone",
                    "resident": {
                        "name": f"Bench Resident {seed}-{i}",
                        "date_of_birth": "1948-05-01",
                        "phone": f"01843 {100000 + i % 900000:06d}",
                        "address": {"line1": f"{i} Station Road", "postcode": rng.choice(postcodes)},
                    },
                    "consent": {"to_share": True},
                    "requests": [{"type": kind, "details": "Weekly shop and prescriptions"} for kind in kinds],
                }
            ).encode()
        )
    return out


class Connection:
    """One kept-alive HTTP/1.1 connection: a request written in one go, the answer read by its Content-Length."""

    def __init__(self, host: str, port: int, token: str):
        self.host, self.port = host, port
        self.head = (
            f"POST /v1/referrals HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes, float]:
        """Status, body and the wall-clock time the request was written."""
        for attempt in (1, 2):
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
                    self.writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sent = time.time()
                self.writer.write(
                    self.head
                    + b"Idempotency-Key: "
                    + uuid.uuid4().hex.encode()
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                head = await self.reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                answer = await self.reader.readexactly(length)
                if b"connection: close" in head.lower():
                    self.close()
                return status, answer, sent
            except (OSError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def _requests_of(status: int, answer: bytes) -> list[str]:
    if status != 201:
        return []
    return [str(r["id"]) for r in json.loads(answer).get("requests", [])]


async def open_loop(url: str, token: str, payloads: list[bytes], rate: float) -> dict:
    """Each referral sent at its scheduled time, on a free kept-alive connection (a new one if none is free)."""
    host, port = url.removeprefix("http://").split(":")
    idle: list[Connection] = []
    sent: dict[int, tuple[float, list[str], int]] = {}
    answered: dict[int, float] = {}  # when the 201 (or other answer) was read
    late = 0.0
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.2

    async def one(i: int, body: bytes) -> None:
        nonlocal late
        late = max(late, loop.time() - (start + i / rate))
        connection = idle.pop() if idle else Connection(host, int(port), token)
        try:
            status, answer, at = await connection.post(body)
        except OSError:
            sent[i] = (time.time(), [], 0)
            return
        answered[i] = time.time()
        idle.append(connection)
        sent[i] = (at, _requests_of(status, answer), status)

    tasks = []
    for i, body in enumerate(payloads):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, body)))
    began = start
    await asyncio.gather(*tasks)
    ended = loop.time()
    for c in idle:
        c.close()
    return {"sent": sent, "answered": answered, "seconds": ended - began, "late": late}


async def closed_loop(url: str, token: str, payloads: list[bytes], connections: int, seconds: float) -> dict:
    host, port = url.removeprefix("http://").split(":")
    sent: dict[int, tuple[float, list[str], int]] = {}
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    counter = iter(range(len(payloads)))

    async def worker() -> None:
        connection = Connection(host, int(port), token)
        while loop.time() < until:
            i = next(counter, None)
            if i is None:
                return
            try:
                status, answer, at = await connection.post(payloads[i])
            except OSError:
                continue
            sent[i] = (at, _requests_of(status, answer), status)
        connection.close()

    began = loop.time()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return {"sent": sent, "seconds": loop.time() - began}


# --- the watcher: hub topics and pull feeds, in its own process ----------------------------


def watch(bootstrap: str, fulfilment_url: str, token: str, feed_poll: float, out_path: str, ready, stop) -> None:
    asyncio.run(_watch(bootstrap, fulfilment_url, token, feed_poll, out_path, ready, stop))


async def _watch(bootstrap, fulfilment_url, token, feed_poll, out_path, ready, stop) -> None:
    import httpx
    from aiokafka import AIOKafkaConsumer, TopicPartition

    topics = Topics()
    hub_topics = [topics.hub(h.slug) for h in KENT_HUBS]
    watched = [topics.referrals, *hub_topics]  # the referral event too: the first hop apart from the second
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100, max_poll_records=2000
    )
    await consumer.start()
    partitions = []
    for topic in watched:
        for _ in range(100):
            found = consumer.partitions_for_topic(topic)
            if found:
                break
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        partitions += [TopicPartition(topic, p) for p in sorted(found or [0])]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for tp in partitions:
        await consumer.position(tp)
    on_topic: dict[str, float] = {}  # the record's timestamp: sent by fulfilment's relay
    read_off: dict[str, float] = {}  # when this hub consumer got it
    on_referrals: dict[str, float] = {}  # the referral event's record timestamp: sent by referrals' relay
    in_feed: dict[str, float] = {}
    cursors = {h.slug: 0 for h in KENT_HUBS}

    async def read_topics():
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=50)
            now = time.time()
            for partition, messages in batches.items():
                for m in messages:
                    if partition.topic == topics.referrals:
                        if b"referral.received" in m.value[:400]:
                            for request in json.loads(m.value)["data"].get("requests", []):
                                on_referrals.setdefault(str(request["request_id"]), m.timestamp / 1000)
                        continue
                    if b'"assignment.routed' not in m.value and b"routed" not in m.value[:400]:
                        continue
                    event = json.loads(m.value)
                    request = (event.get("data") or {}).get("request") or {}
                    if "request_id" in request:
                        request_id = str(request["request_id"])
                        read_off.setdefault(request_id, now)
                        on_topic.setdefault(request_id, m.timestamp / 1000 if m.timestamp > 0 else now)

    async def read_feeds():
        async with httpx.AsyncClient(
            base_url=fulfilment_url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as http:
            # The feeds start where they are now: only this run's entries count.
            for slug in cursors:
                while True:
                    page = (
                        await http.get(f"/v1/hubs/{slug}/feed", params={"cursor": cursors[slug], "limit": 1000})
                    ).json()
                    if not page["items"]:
                        break
                    cursors[slug] = page["next_cursor"]
            ready.set()
            while not stop.is_set():
                for slug in cursors:
                    started = time.monotonic()
                    try:
                        page = (
                            await http.get(f"/v1/hubs/{slug}/feed", params={"cursor": cursors[slug], "limit": 1000})
                        ).json()
                    except httpx.HTTPError:
                        continue
                    now = time.time()
                    for item in page["items"]:
                        request = (item["event"].get("data") or {}).get("request") or {}
                        if "request_id" in request:
                            in_feed.setdefault(str(request["request_id"]), now)
                    cursors[slug] = page["next_cursor"]
                    await asyncio.sleep(max(0.0, feed_poll / len(cursors) - (time.monotonic() - started)))

    try:
        await asyncio.gather(read_topics(), read_feeds())
    finally:
        await consumer.stop()
        Path(out_path).write_text(
            json.dumps({"topic": on_topic, "read": read_off, "feed": in_feed, "referral_event": on_referrals})
        )


# --- figures --------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def latencies(sent: dict, arrivals: dict[str, float]) -> tuple[list[float], list[str]]:
    found, missing = [], []
    for at, request_ids, _ in sent.values():
        for request_id in request_ids:
            if request_id in arrivals:
                found.append((arrivals[request_id] - at) * 1000)
            else:
                missing.append(request_id)
    return found, missing


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def line(name: str, values: list[float]) -> str:
    return (
        f"  {name:<40} p50 {percentile(values, 0.5):7.1f} ms   p99 {percentile(values, 0.99):7.1f} ms   "
        f"max {max(values) if values else float('nan'):7.1f} ms   ({len(values)} requests)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--sustained-seconds", type=float, default=10.0, help="0: skip the sustained run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--feed-poll", type=float, default=1.0, help="seconds between two polls of one hub's feed")
    parser.add_argument("--drain", type=float, default=30.0, help="seconds to wait for the last arrivals")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load at the rate before measuring")
    parser.add_argument("--idle-seconds", type=float, default=5.0, help="idle baseline before each phase")
    parser.add_argument("--hold", action="store_true", help="print the pids and wait for Enter before the load")
    args = parser.parse_args()

    postcodes = kent_postcodes()
    with tempfile.TemporaryDirectory(prefix="kt-bench-pipeline-") as scratch:
        suite = RunningSuite(Path(scratch), database=args.database)
        print(f"starting the suite (kent-together run, {args.database}, embedded broker) in {scratch} …", flush=True)
        suite.start(timeout=300)  # a loaded machine takes its time
        try:
            run(suite, args, postcodes, Path(scratch))
        finally:
            suite.stop()


def run(suite: RunningSuite, args, postcodes: list[str], scratch: Path) -> None:
    intake_token = suite.token("call-centre")
    admin_token = suite.token("admin")
    print(f"  pids: {suite.pids()}", flush=True)
    if args.hold:
        input("press Enter to start the load … ")

    def phase(name: str, driver) -> tuple[dict, dict]:
        ctx = multiprocessing.get_context("spawn")
        ready, stop = ctx.Event(), ctx.Event()
        out = scratch / f"arrivals-{name}.json"
        watcher = ctx.Process(
            target=watch,
            args=(
                suite.bootstrap_servers,
                suite.service_url("fulfilment"),
                admin_token,
                args.feed_poll,
                str(out),
                ready,
                stop,
            ),
        )
        watcher.start()
        if not ready.wait(60):
            raise RuntimeError("the watcher did not start")
        # Idle first: what each process costs a second with no load (its consumers' and the watcher's polls,
        # background loops), so the per-referral figure can be read with that baseline apart.
        for _ in range(int(args.drain)):  # what came before (the warm-up, the last phase) drained first
            if _probe_lag(suite) == 0:
                break
            time.sleep(1.0)
        time.sleep(1.0)
        idle_before = suite.cpu_seconds()
        idle_started = time.monotonic()
        time.sleep(args.idle_seconds)
        idle_after = suite.cpu_seconds()
        idle_seconds = time.monotonic() - idle_started
        before = load()
        cpu_before = suite.cpu_seconds()
        started = time.monotonic()
        result = asyncio.run(driver())
        want = {r for _, ids, _ in result["sent"].values() for r in ids}
        deadline = time.monotonic() + args.drain
        # The watcher holds the arrivals: let it run until the pipeline has drained (or the drain time is over).
        drained_at = None
        while time.monotonic() < deadline:
            time.sleep(1.0)
            lag_probe = _probe_lag(suite)
            if lag_probe == 0:
                drained_at = time.monotonic()
                time.sleep(1.5)  # the last relay round and the watcher's last fetch and feed poll
                break
        cpu_after = suite.cpu_seconds()
        result["cpu"] = {name: cpu_after[name] - cpu_before.get(name, 0.0) for name in cpu_after}
        result["idle_per_second"] = {
            name: (idle_after.get(name, 0.0) - idle_before.get(name, 0.0)) / idle_seconds for name in idle_after
        }
        result["elapsed"] = time.monotonic() - started
        stop.set()
        watcher.join(30)
        arrivals = json.loads(out.read_text())
        result["load_before"], result["load_after"] = before, load()
        result["want"] = want
        result["drained"] = drained_at is not None
        return result, arrivals

    # Warm-up: connections, caches, the consumers' first fetches; not counted.
    if args.warmup > 0:
        warm = bodies(int(args.rate * args.warmup), seed=1, postcodes=postcodes)
        asyncio.run(open_loop(suite.service_url("referrals"), intake_token, warm, args.rate))
        time.sleep(3)

    count = int(args.rate * args.seconds)
    payloads = bodies(count, seed=2, postcodes=postcodes)
    print(f"\nfixed rate: {args.rate:g} referrals/s for {args.seconds:g} s (open loop), {args.database} …", flush=True)
    result, arrivals = phase(
        "fixed", lambda: open_loop(suite.service_url("referrals"), intake_token, payloads, args.rate)
    )
    sent = result["sent"]
    ok = sum(1 for _, _, status in sent.values() if status == 201)
    print(f"  {result['load_before']} before, {result['load_after']} after")
    print(
        f"  posted {len(sent)}, answered 201: {ok}, in {result['seconds']:.1f} s: "
        f"rate held {len(sent) / result['seconds']:.1f}/s (sends at most {result['late'] * 1000:.0f} ms late)"
    )
    topic, topic_missing = latencies(sent, arrivals["topic"])
    read, _ = latencies(sent, arrivals["read"])
    feed, feed_missing = latencies(sent, arrivals["feed"])
    print(cpu_line(result["cpu"], ok))
    print(idle_line(result, ok))
    answered = [(result["answered"][i] - at) * 1000 for i, (at, _, _) in sent.items() if i in result["answered"]]
    first_hop, _ = latencies(sent, arrivals["referral_event"])
    print(line("POST sent → 201 answered", answered))
    print(line("POST sent → referral event sent", first_hop))
    print(line("POST sent → hub's Kafka topic", topic))
    print(line("POST sent → read by a hub (100 ms wait)", read))
    print(line(f"POST sent → hub's pull feed (±{args.feed_poll * 1000:.0f} ms)", feed))
    for kind, missing in (("topic", topic_missing), ("feed", feed_missing)):
        print(f"  never arrived on the hub {kind}: {len(missing)}" + (f": {missing[:10]}" if missing else ""))

    if args.sustained_seconds > 0:
        payloads = bodies(int(2000 * args.sustained_seconds), seed=3, postcodes=postcodes)
        print(
            f"\nsustained: {args.connections} connections posting as fast as intake answers for "
            f"{args.sustained_seconds:g} s, then drained …",
            flush=True,
        )
        result, arrivals = phase(
            "sustained",
            lambda: closed_loop(
                suite.service_url("referrals"), intake_token, payloads, args.connections, args.sustained_seconds
            ),
        )
        sent = result["sent"]
        ok = [(at, ids) for at, ids, status in sent.values() if status == 201]
        first = min(at for at, _ in ok)
        arrived = [arrivals["topic"][r] for _, ids in ok for r in ids if r in arrivals["topic"]]
        missing = [r for _, ids in ok for r in ids if r not in arrivals["topic"]]
        last = max(arrived) if arrived else first
        print(f"  {result['load_before']} before, {result['load_after']} after")
        print(
            f"  intake: {len(ok)} referrals answered 201 in {result['seconds']:.1f} s = {len(ok) / result['seconds']:.0f}/s"
        )
        print(f"  every request on its hub topic {last - first - result['seconds']:.1f} s after the load ended")
        print(
            f"  sustained (referrals ÷ first POST to last arrival): {len(ok) / (last - first):.0f} referrals/s"
            f"   ({len(arrived) / (last - first):.0f} requests/s)"
        )
        print(f"  never arrived on the hub topic: {len(missing)}")
        print(cpu_line(result["cpu"], len(ok)))
        print(idle_line(result, len(ok)))
        topic_latency, _ = latencies(sent, arrivals["topic"])
        print(line("POST sent → hub's Kafka topic", topic_latency))


def cpu_line(cpu: dict[str, float], referrals: int) -> str:
    """Each process's CPU per referral over the phase (its drain included): steadier than rates on a shared machine."""
    if not referrals:
        return "  CPU: no referrals"
    parts = [f"{name} {1000 * seconds / referrals:.2f}" for name, seconds in sorted(cpu.items(), key=lambda kv: -kv[1])]
    return f"  CPU ms per referral: {', '.join(parts)}; total {1000 * sum(cpu.values()) / referrals:.2f}"


def idle_line(result: dict, referrals: int) -> str:
    """The idle baseline (CPU ms a second, no load) and the CPU per referral with that baseline taken off.

    Polling costs per second, not per referral: a phase that runs longer (a busy machine, a queue at intake)
    amortises more of it over the same referrals. Net of it, the figure is the work each referral causes.
    """
    if not referrals:
        return "  CPU net of idle: no referrals"
    idle, cpu, elapsed = result["idle_per_second"], result["cpu"], result["elapsed"]
    base = ", ".join(f"{name} {1000 * rate:.1f}" for name, rate in sorted(idle.items(), key=lambda kv: -kv[1]))
    net = {name: max(0.0, seconds - idle.get(name, 0.0) * elapsed) for name, seconds in cpu.items()}
    parts = ", ".join(
        f"{name} {1000 * seconds / referrals:.2f}" for name, seconds in sorted(net.items(), key=lambda kv: -kv[1])
    )
    return (
        f"  idle CPU ms a second (no load, watcher polling): {base}\n"
        f"  CPU ms per referral net of idle ({elapsed:.0f} s): {parts}; total {1000 * sum(net.values()) / referrals:.2f}"
    )


def _probe_lag(suite: RunningSuite) -> int | None:
    """Work still in the pipeline, from the services' own metrics: consumer lag and outbox backlog (None if unknown)."""
    import httpx

    total = 0
    for name in ("referrals", "fulfilment"):
        try:
            text = httpx.get(suite.service_url(name) + "/metrics", timeout=5).text
        except httpx.HTTPError:
            return None
        for metric in text.splitlines():
            if metric.startswith(("kt_consumer_lag", "kt_outbox_backlog")) and not metric.startswith("#"):
                try:
                    total += int(float(metric.rsplit(" ", 1)[1]))
                except ValueError:
                    pass
    return total


if __name__ == "__main__":
    main()
