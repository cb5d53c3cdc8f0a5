"""Every Kafka topic the platform makes: partitions, retention, what it holds.

The one source that topics are made from: `kent-together create-topics` (what
`make run`, the compose file's job and the tests run) creates them on a
cluster and checks a running cluster against them, and Strimzi's
KafkaTopic resources (deploy/k8s/base/kafka-topics.yaml) are written from them
by `kent-together topics-manifest` (tests/deploy fails when the file drifts).

Personal-data topics are kept short (docs/privacy.md: an erased resident's data
may stay in them until retention passes); the topics reporting is rebuilt from
are kept for ever.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.kafka_security import KafkaSecurity, client_options, start_client
from shared.settings import Topics

DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_days: int | None
    """None: kept for ever (retention.ms=-1)."""
    contents: str

    @property
    def retention_ms(self) -> int:
        return -1 if self.retention_days is None else self.retention_days * DAY_MS

    def config(self, *, replicas: int) -> dict[str, str]:
        """The topic's own settings; a write is acknowledged by two replicas where there are three."""
        return {
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(min(2, replicas)),
            "cleanup.policy": "delete",
        }


def topic_plan(hubs: list[str], topics: Topics | None = None) -> list[TopicSpec]:
    """Every topic, for the given hub slugs (services.fulfilment.hubs names them)."""
    topics = topics or Topics()
    plan = [
        TopicSpec(topics.referrals, 6, 7, "personal data: read by fulfilment only"),
        TopicSpec(topics.request_stats, 6, None, "no personal data: kept so reporting can be rebuilt"),
        TopicSpec(topics.assignment_status, 6, None, "no personal data: kept so reporting can be rebuilt"),
        TopicSpec(topics.actions, 3, None, "no personal data: kept so reporting can be rebuilt"),
    ]
    plan += [TopicSpec(topics.hub(hub), 3, 14, f"personal data: readable only by hub-{hub}") for hub in sorted(hubs)]
    plan += [
        TopicSpec(topics.dead_letter_prefix + group, 1, 30, f"events {group} could not handle, with the reason")
        for group in ("fulfilment", "referrals", "reporting")
    ]
    return plan


async def _admin(bootstrap_servers: str, security: KafkaSecurity | None) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=15_000, **client_options(security)
    )
    try:
        await start_client(admin, bootstrap_servers=bootstrap_servers, security=security)
    except BaseException:
        await admin.close()
        raise
    return admin


async def create_topics(
    bootstrap_servers: str, plan: list[TopicSpec], *, security: KafkaSecurity | None = None
) -> list[str]:
    """Create the plan's topics that are missing, replicated three times where there are three brokers.

    Returns the names created; a topic that exists is left as it is (`check_topics` says how it differs).
    """
    admin = await _admin(bootstrap_servers, security)
    try:
        replicas = min(3, len((await admin.describe_cluster())["brokers"]))
        existing = set(await admin.list_topics())
        missing = [spec for spec in plan if spec.name not in existing]
        if missing:
            response = await admin.create_topics(
                [
                    NewTopic(
                        spec.name,
                        num_partitions=spec.partitions,
                        replication_factor=replicas,
                        topic_configs=spec.config(replicas=replicas),
                    )
                    for spec in missing
                ]
            )
            for name, code, *rest in response.topic_errors:
                if code not in (0, 36):  # 36: created meanwhile by another process
                    raise RuntimeError(f"creating topic {name} failed: error {code} {rest[-1] if rest else ''}")
            await until_led(admin, [spec.name for spec in missing])
        return [spec.name for spec in missing]
    finally:
        await admin.close()


async def until_led(admin: AIOKafkaAdminClient, names: list[str], *, timeout: float = 30.0) -> None:
    """Until every partition of the new topics has a leader: creation answers before the metadata spreads."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        described = await admin.describe_topics(names)
        if all(
            t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        if loop.time() > deadline:
            raise RuntimeError(f"topics created but without leaders after {timeout:.0f} s: {', '.join(names)}")
        await asyncio.sleep(0.2)


async def check_topics(
    bootstrap_servers: str, plan: list[TopicSpec], *, security: KafkaSecurity | None = None
) -> list[str]:
    """How the running cluster differs from the plan: one sentence per difference, [] when none."""
    admin = await _admin(bootstrap_servers, security)
    try:
        replicas = min(3, len((await admin.describe_cluster())["brokers"]))
        described = {t["topic"]: t for t in await admin.describe_topics([spec.name for spec in plan])}
        present = [spec for spec in plan if described.get(spec.name, {}).get("error_code", 3) == 0]
        differences = [f"{spec.name}: missing" for spec in plan if spec not in present]
        if not present:
            return differences
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, spec.name) for spec in present]
        )
        configs = {}
        for response in responses:
            for resource in response.resources:
                configs[resource[3]] = {entry[0]: entry[1] for entry in resource[4]}
        for spec in present:
            partitions = described[spec.name]["partitions"]
            if len(partitions) != spec.partitions:
                differences.append(f"{spec.name}: {len(partitions)} partitions, the plan says {spec.partitions}")
            thin = sorted(p["partition"] for p in partitions if len(p["replicas"]) < replicas)
            if thin:
                differences.append(f"{spec.name}: partitions {thin} have fewer than {replicas} replicas")
            for key, wanted in spec.config(replicas=replicas).items():
                actual = configs.get(spec.name, {}).get(key)
                if actual != wanted:
                    differences.append(f"{spec.name}: {key}={actual}, the plan says {wanted}")
        return differences
    finally:
        await admin.close()


def strimzi_manifest(plan: list[TopicSpec], *, cluster: str = "kt-kafka") -> str:
    """The KafkaTopic resources for Strimzi's topic operator, as deploy/k8s/base/kafka-topics.yaml holds them."""
    lines = [
        "# Kafka topics for the Strimzi topic operator (cluster `kt-kafka`), with partitions and retention.",
        "# Written by `kent-together topics-manifest` from shared/topic_plan.py: edit the plan, not this file",
        "# (tests/deploy fails when they differ).",
    ]
    for spec in plan:
        contents = spec.contents.replace("'", "''")
        lines += [
            "---",
            "apiVersion: kafka.strimzi.io/v1beta2",
            "kind: KafkaTopic",
            "metadata:",
            f"  name: {spec.name.replace('.', '-')}",
            "  labels:",
            f"    strimzi.io/cluster: {cluster}",
            "  annotations:",
            f"    kent-together/contents: '{contents}'",
            "spec:",
            f"  topicName: {spec.name}",
            f"  partitions: {spec.partitions}",
            "  replicas: 3",
            "  config:",
            *(f"    {key}: {value}" for key, value in spec.config(replicas=3).items()),
        ]
    return "\n".join(lines) + "\n"
