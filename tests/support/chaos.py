"""The fault suite: the real suite under a steady load while its parts are killed, then a count of what survived.

    .venv/bin/python -m bench.chaos [--seconds 60] [--rate 20] [--broker tansu|kafka]   (make chaos)

It starts the whole suite as `make run` does (its own broker on free ports,
SQLite files in a scratch directory), then for `--seconds`:

- front-ends post referrals at `--rate` a second, each with an
  Idempotency-Key, and retry with the same key when the service is down or
  answers 5xx, as a front-end should;
- hub staff of every hub accept, start and fulfil what is routed to them;
- faults land in turn: kill -9 of each service (the supervisor starts it
  again), and a restart of every service; then the broker's faults:
  - `--broker tansu` (the embedded default): the broker frozen for 8 s
    (SIGSTOP … SIGCONT);
  - `--broker kafka` (Apache Kafka, three KRaft nodes, replication 3,
    min.insync.replicas 2): kill -9 of the leader of the referrals topic's
    first partition, restarted with its data; two of the three nodes down
    for 8 s (below min.insync.replicas: producers must wait, never lose);
    a rolling restart of all three; and a second instance of fulfilment and
    of reporting in their consumer groups, one of each killed -9 mid-run.

Then it waits for the outboxes to drain and the consumers to catch up, and
checks: every referral answered 201 exists exactly once; every request of
every stored referral has exactly one assignment; reporting's requests by
type, status and hub (when reporting runs) equal the truth counted in the
referrals and fulfilment databases; every dead-letter topic is empty. It prints the load
held, the faults injected, and what was lost or duplicated (the target is
zero), and exits 1 if anything was.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from services.fulfilment.hubs import KENT_HUBS
from services.fulfilment.postcodes import PostcodeDirectory
from shared.bus import free_port, topic_partitions
from shared.settings import PORTS, Topics
from tests.support.brokers import Broker, ControlledBroker, ControlledKafkaCluster
from tests.support.suite import Suite, port_offset

SERVICES = [name for name in PORTS if name != "web"]
TYPES = ["food", "prescription", "befriending", "financial", "practical", "other"]
WEIGHTS = [55, 27, 7, 5, 4, 2]


@dataclass
class Tally:
    posted: int = 0
    accepted: dict[str, str] = field(default_factory=dict)  # Idempotency-Key -> referral id
    retries: int = 0
    gave_up: int = 0
    transitions: int = 0
    transition_refusals: int = 0
    faults: list[str] = field(default_factory=list)


def kent_postcodes(per_district: int = 20, seed: int = 7) -> list[str]:
    directory = PostcodeDirectory.load()
    rng = random.Random(seed)
    chosen: list[str] = []
    for hub in KENT_HUBS:
        codes = directory.postcodes(district_code=hub.district_code)
        chosen += rng.sample(codes, min(per_district, len(codes)))
    return chosen


def referral_body(i: int, rng: random.Random, postcodes: list[str]) -> dict:
    kinds = set()
    for _ in range(rng.choice([1, 1, 1, 2, 2, 3])):
        kinds.add(rng.choices(TYPES, WEIGHTS)[0])
    channel = rng.choice(["phone", "phone", "online", "partner", "email"])
    referrer = {"name": "Dr Patel", "organisation": "Northdown Surgery", "relationship": "GP"}
    return {
        "channel": channel,
        **({"referrer": referrer} if channel == "partner" else {}),
        "resident": {
            "name": f"Chaos Resident {i}",
            "date_of_birth": "1950-01-01",
            "phone": f"01843 {500000 + i:06d}",
            "address": {"line1": f"{i} Test Road", "postcode": rng.choice(postcodes)},
        },
        "consent": {"to_share": True},
        "requests": [{"type": kind} for kind in sorted(kinds)],
    }


async def front_end(
    http: httpx.AsyncClient,
    *,
    tally: Tally,
    token: str,
    run: str,
    rate: float,
    until: float,
    postcodes: list[str],
    worker: int,
    workers: int,
) -> None:
    """Posts at its share of `rate`; a failed post is retried with the same key until it is answered."""
    rng = random.Random(f"{run}-{worker}")
    headers = {"Authorization": f"Bearer {token}"}
    i = worker
    loop = asyncio.get_running_loop()
    while loop.time() < until:
        key = f"{run}-{i}"
        body = referral_body(i, rng, postcodes)
        tally.posted += 1
        give_up_at = loop.time() + 120
        while True:
            try:
                response = await http.post(
                    "/v1/referrals", json=body, timeout=10, headers={**headers, "Idempotency-Key": key}
                )
                if response.status_code == 201:
                    tally.accepted[key] = response.json()["id"]
                    break
                if response.status_code < 500:
                    raise RuntimeError(f"refused: {response.status_code} {response.text[:600]}")
            except httpx.HTTPError:
                pass
            if loop.time() > give_up_at:
                tally.gave_up += 1
                break
            tally.retries += 1
            await asyncio.sleep(0.25)
        i += workers
        await asyncio.sleep(workers / rate)


async def hub_staff(http: httpx.AsyncClient, *, tally: Tally, hub: str, token: str, until: float) -> None:
    """Accepts, starts and fulfils what reaches the hub; keeps going through outages."""
    headers = {"Authorization": f"Bearer {token}"}
    loop = asyncio.get_running_loop()
    steps = {"routed": "accepted", "accepted": "in_progress", "in_progress": "fulfilled"}
    while loop.time() < until:
        try:
            items = []
            for status in steps:
                listing = await http.get(
                    f"/v1/hubs/{hub}/assignments", headers=headers, timeout=10, params={"status": status, "limit": 20}
                )
                items += listing.json().get("items", []) if listing.status_code == 200 else []
            for item in items:
                answer = await http.post(
                    f"/v1/assignments/{item['id']}/transitions",
                    headers=headers,
                    timeout=10,
                    json={"to": steps[item["status"]]},
                )
                if answer.status_code == 200:
                    tally.transitions += 1
                elif answer.status_code == 409:
                    tally.transition_refusals += 1  # a retry after a kill found it done already
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.5)


async def leader_of(bootstrap: str, topic: str, partition: int = 0) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for described in await admin.describe_topics([topic]):
            for p in described["partitions"]:
                if p["partition"] == partition:
                    return p["leader"]
    finally:
        await admin.close()
    raise RuntimeError(f"{topic}[{partition}] has no leader")


async def inject_faults(
    suite: Suite,
    broker: Broker,
    *,
    services: list[str],
    tally: Tally,
    start: float,
    seconds: float,
    second_instances: dict[str, SecondInstance],
) -> None:
    faults = [(f"kill -9 {name}", name) for name in services]
    faults += [(f"kill -9 of one of two {name} instances", f"second:{name}") for name in second_instances]
    faults.append(("restart of every service", "all"))
    if isinstance(broker, ControlledKafkaCluster):
        faults += [
            ("kill -9 of the referrals topic's leader, restarted", "leader"),
            ("two of three brokers down 8 s (below min.insync.replicas)", "quorum"),
            ("rolling restart of the three brokers", "rolling"),
        ]
    else:
        faults.append(("broker stopped 8 s", "broker"))
    gap = seconds / (len(faults) + 1)
    loop = asyncio.get_running_loop()
    for n, (label, target) in enumerate(faults, start=1):
        await asyncio.sleep(max(0.0, start + n * gap - loop.time()))
        tally.faults.append(f"{time.strftime('%H:%M:%S')} {label}")
        if target == "broker":
            broker.pause()
            await asyncio.sleep(8)
            broker.resume()
        elif target == "leader":
            leader = await leader_of(broker.bootstrap_servers, Topics().referrals)
            broker.kill(leader)
            await asyncio.sleep(3)
            await asyncio.to_thread(broker.start_node, leader)
        elif target == "quorum":
            leader = await leader_of(broker.bootstrap_servers, Topics().referrals)
            down = [leader] + [n.id for n in broker.nodes if n.id != leader][:1]
            for node in down:
                broker.kill(node)
            await asyncio.sleep(8)
            for node in down:
                await asyncio.to_thread(broker.start_node, node)
        elif target == "rolling":
            for node in broker.nodes:
                await asyncio.to_thread(broker.stop_node, node.id)
                await asyncio.to_thread(broker.start_node, node.id)
        elif target.startswith("second:"):
            second_instances[target.split(":", 1)[1]].kill()
        elif target == "all":
            for name in services:
                os.kill(suite.service_pid(name), signal.SIGTERM)
        else:
            os.kill(suite.service_pid(target), signal.SIGKILL)


class SecondInstance:
    """One more process of a service beside the supervisor's: the same database, the same consumer group."""

    def __init__(self, suite: Suite, name: str, *, log: Path):
        self.name = name
        self.port = free_port()
        env = {
            **suite.env,
            "KAFKA_BOOTSTRAP_SERVERS": suite.env["KAFKA_BOOTSTRAP_SERVERS"],
            # Only the consumers: the first instance runs the scheduler and the webhooks.
            f"{name.upper()}_RUN_SCHEDULER": "false",
            f"{name.upper()}_RUN_WEBHOOKS": "false",
            f"{name.upper()}_CREATE_HUB_TOPICS": "false",
        }
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                f"services.{name}.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=open(log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def query(path: Path, sql: str, *args) -> list[tuple]:
    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


async def ready(http: httpx.AsyncClient, url: str) -> dict | None:
    try:
        response = await http.get(f"{url}/ready", timeout=5)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


async def settle(http: httpx.AsyncClient, suite: Suite, *, services: list[str], var: Path, timeout: float) -> bool:
    """Wait until every outbox is empty and every stored request has its assignment."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [await ready(http, suite.url(PORTS[name])) for name in services]
        drained = all(s is not None and s["outbox"]["backlog"] == 0 for s in states)
        requests = query(var / "referrals.db", "SELECT count(*) FROM requests")[0][0]
        assigned = query(var / "fulfilment.db", "SELECT count(DISTINCT request_id) FROM assignments")[0][0]
        if drained and requests == assigned:
            return True
        await asyncio.sleep(1)
    return False


async def dead_letters(bootstrap: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(Topics().dead_letter_prefix)]
    finally:
        await admin.close()
    counts: dict[str, int] = {}
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        for topic in topics:
            partitions = await topic_partitions(consumer, [topic])
            ends = await consumer.end_offsets(partitions) if partitions else {}
            starts = await consumer.beginning_offsets(partitions) if partitions else {}
            counts[topic] = sum(ends[p] - starts[p] for p in partitions)
    finally:
        await consumer.stop()
    return counts


# Each figure checked, with the truth it must equal: counted in the owning service's database.
FIGURES = [
    ("type", "referrals.db", "SELECT type, count(*) FROM requests GROUP BY type"),
    ("status", "fulfilment.db", "SELECT status, count(*) FROM assignments GROUP BY status"),
    ("hub", "fulfilment.db", "SELECT hub, count(*) FROM assignments WHERE hub IS NOT NULL GROUP BY hub"),
]


async def reporting_differences(
    http: httpx.AsyncClient, suite: Suite, *, var: Path, token: str, timeout: float
) -> list[str] | None:
    """Figures that differ from the truth (None when reporting does not run)."""
    url = suite.url(PORTS["reporting"])
    deadline = time.monotonic() + timeout
    differences: list[str] = []
    while time.monotonic() < deadline:
        differences = []
        for group_by, database, truth_query in FIGURES:
            truth = dict(query(var / database, truth_query))
            try:
                response = await http.get(
                    f"{url}/v1/figures/requests",
                    params={"group_by": group_by},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=10,
                )
            except httpx.HTTPError:
                differences.append(f"by {group_by}: reporting did not answer")
                continue
            if response.status_code == 404:
                return None
            rows = response.json().get("rows", []) if response.status_code == 200 else []
            figures = {row[group_by]: row["count"] for row in rows if row.get("count")}
            differences += [
                f"requests by {group_by}, {key}: reporting {figures.get(key, 0)}, truth {truth.get(key, 0)}"
                for key in sorted(set(truth) | set(figures))
                if figures.get(key, 0) != truth.get(key, 0)
            ]
        if not differences:
            return []
        await asyncio.sleep(1)
    return differences


async def chaos(*, seconds: float, rate: float, settle_seconds: float, broker_kind: str = "tansu") -> dict:
    scratch = Path(tempfile.mkdtemp(prefix="kt-chaos-"))
    var = scratch / "var"
    if broker_kind == "kafka":
        broker: Broker = ControlledKafkaCluster(scratch / "kafka", nodes=3).start()
        port = broker.nodes[0].port
    else:
        broker = ControlledBroker(port=free_port(), log_path=scratch / "broker.log").start()
        port = broker.port
    suite = Suite(var_dir=var, port_offset=port_offset("chaos"), broker_port=port)
    suite.env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
    if broker_kind == "tansu":
        suite.env["KAFKA_IDEMPOTENT_PRODUCER"] = "false"  # tansu refuses InitProducerId
    tally = Tally()
    run = uuid.uuid4().hex[:8]
    second_instances: dict[str, SecondInstance] = {}
    try:
        suite.start(timeout=300)  # a loaded machine takes its time
        services = [name for name in SERVICES if f"  {name} " in suite.log.read_text()]
        if broker_kind == "kafka":
            second_instances = {
                name: SecondInstance(suite, name, log=scratch / f"{name}-2.log")
                for name in ("fulfilment", "reporting")
                if name in services
            }
        postcodes = await asyncio.to_thread(kent_postcodes)
        tokens = {role: suite.token(role) for role in ("call-centre", "admin", "analyst")}
        hub_tokens = {hub.slug: suite.token("hub", hub.slug) for hub in KENT_HUBS}
        loop = asyncio.get_running_loop()
        start = loop.time()
        until = start + seconds
        limits = httpx.Limits(max_connections=50)
        async with (
            httpx.AsyncClient(base_url=suite.url(8001), limits=limits) as intake,
            httpx.AsyncClient(base_url=suite.url(8002), limits=limits) as hubs,
            httpx.AsyncClient(limits=limits) as http,
        ):
            workers = max(2, int(rate // 5))  # two at least: one stuck retrying through an outage is not the whole load
            await asyncio.gather(
                *[
                    front_end(
                        intake,
                        tally=tally,
                        token=tokens["call-centre"],
                        run=run,
                        rate=rate,
                        until=until,
                        postcodes=postcodes,
                        worker=w,
                        workers=workers,
                    )
                    for w in range(workers)
                ],
                *[
                    hub_staff(hubs, tally=tally, hub=slug, token=token, until=until)
                    for slug, token in hub_tokens.items()
                ],
                inject_faults(
                    suite,
                    broker,
                    services=services,
                    tally=tally,
                    start=start,
                    seconds=seconds,
                    second_instances=second_instances,
                ),
            )
            held = min(loop.time(), until) - start  # the load's own time; faults may run on past it
            settled = await settle(http, suite, services=services, var=var, timeout=settle_seconds)
            accepted = set(tally.accepted.values())
            stored = dict(query(var / "referrals.db", "SELECT id, idempotency_key FROM referrals"))
            per_key = Counter(key for key in stored.values() if key and key.startswith(run))
            lost_referrals = sorted(accepted - set(stored))
            duplicated_referrals = sorted(key for key, n in per_key.items() if n > 1)
            request_ids = {r for (r,) in query(var / "referrals.db", "SELECT id FROM requests")}
            assignments = Counter(r for (r,) in query(var / "fulfilment.db", "SELECT request_id FROM assignments"))
            lost_requests = sorted(request_ids - set(assignments))
            duplicated_assignments = sorted(r for r, n in assignments.items() if n > 1)
            figures = None
            if "reporting" in services:
                figures = await reporting_differences(
                    http, suite, var=var, token=tokens["analyst"], timeout=settle_seconds
                )
            dlq = await dead_letters(broker.bootstrap_servers)
    finally:
        for instance in second_instances.values():
            instance.stop()
        suite.stop()
        broker.stop()
    return {
        "broker": broker_kind,
        "seconds": round(held, 1),
        "rate_asked": rate,
        "services": services,
        "referrals_posted": tally.posted,
        "referrals_answered_201": len(tally.accepted),
        "referrals_per_second_held": round(len(tally.accepted) / held, 1),
        "retries_after_outage": tally.retries,
        "gave_up": tally.gave_up,
        "requests_stored": len(request_ids),
        "hub_transitions": tally.transitions,
        "transitions_found_done_on_retry": tally.transition_refusals,
        "faults": tally.faults,
        "settled": settled,
        "lost_referrals": len(lost_referrals),
        "duplicated_referrals": len(duplicated_referrals),
        "requests_without_assignment": len(lost_requests),
        "requests_with_two_assignments": len(duplicated_assignments),
        "reporting_differences": figures,
        "dead_letters": {t: n for t, n in dlq.items() if n},
        "scratch": str(scratch),
    }


def failures(result: dict) -> list[str]:
    problems = [
        name
        for name in (
            "lost_referrals",
            "duplicated_referrals",
            "requests_without_assignment",
            "requests_with_two_assignments",
            "gave_up",
        )
        if result[name]
    ]
    if result["reporting_differences"]:
        problems.append("reporting_differences")
    if result["dead_letters"]:
        problems.append("dead_letters")
    if not result["settled"]:
        problems.append("not settled")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=20, help="referrals a second")
    parser.add_argument("--settle-seconds", type=float, default=120)
    parser.add_argument(
        "--broker",
        choices=["tansu", "kafka"],
        default="tansu",
        help="tansu: the embedded default; kafka: Apache Kafka, three KRaft nodes",
    )
    args = parser.parse_args()
    result = asyncio.run(
        chaos(seconds=args.seconds, rate=args.rate, settle_seconds=args.settle_seconds, broker_kind=args.broker)
    )
    print(json.dumps(result, indent=2))
    problems = failures(result)
    print(
        f"\nload held: {result['referrals_answered_201']} referrals in {result['seconds']} s "
        f"({result['referrals_per_second_held']}/s), {result['hub_transitions']} hub transitions"
    )
    print(f"faults injected: {len(result['faults'])}")
    print(
        f"lost: {result['lost_referrals']} referrals, {result['requests_without_assignment']} requests without "
        f"an assignment; duplicated: {result['duplicated_referrals']} referrals, "
        f"{result['requests_with_two_assignments']} assignments"
    )
    print("result: " + ("nothing lost, nothing duplicated" if not problems else "FAILED: " + ", ".join(problems)))
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
