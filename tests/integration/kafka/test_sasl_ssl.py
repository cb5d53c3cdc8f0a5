"""SASL_SSL with SCRAM-SHA-512 and ACLs, for real, on the test cluster's secured listener.

The principals and ACLs are the production overlay's own (deploy/k8s/base/kafka-users.yaml),
created the way Strimzi's User Operator creates them: SCRAM credentials and ACL
bindings through the Admin API. The certificates are made by the test. Each
client is built from the settings a service reads (KAFKA_SECURITY_PROTOCOL, …).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from pathlib import Path

import pytest
import yaml
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
)
from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialUpsertion,
)

from shared.bus import OutgoingMessage, Producer, ensure_topics
from shared.kafka_security import KafkaSecurity, KafkaSetupError, client_options
from shared.settings import Topics
from tests.support.kafka import TEST_BROKER
from tests.support.tls import make_certificates

pytestmark = pytest.mark.skipif(
    TEST_BROKER != "kafka",
    reason="the embedded broker has no TLS or SASL: tests/integration/shared/test_kafka_security.py covers it",
)

USERS_FILE = Path(__file__).parents[3] / "deploy" / "k8s" / "base" / "kafka-users.yaml"
OPERATION = {
    "Read": AclOperation.READ,
    "Write": AclOperation.WRITE,
    "Describe": AclOperation.DESCRIBE,
    "Create": AclOperation.CREATE,
    "All": AclOperation.ALL,
    "IdempotentWrite": AclOperation.IDEMPOTENT_WRITE,
}
RESOURCE = {"topic": ResourceType.TOPIC, "group": ResourceType.GROUP, "cluster": ResourceType.BROKER}
PATTERN = {"literal": ResourcePatternType.LITERAL, "prefix": ResourcePatternType.PREFIXED}


def production_users() -> list[dict]:
    return [doc for doc in yaml.safe_load_all(USERS_FILE.read_text()) if doc and doc["kind"] == "KafkaUser"]


def _wait(futures: dict) -> None:
    for future in futures.values():
        future.result(timeout=30)


@pytest.fixture(scope="module")
def principals(broker) -> dict[str, str]:
    """Every KafkaUser of the production overlay, with a fresh password and its ACLs, as Strimzi makes them."""
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    passwords = {user["metadata"]["name"]: secrets.token_urlsafe(18) for user in production_users()}
    _wait(
        admin.alter_user_scram_credentials(
            [
                UserScramCredentialUpsertion(
                    name, ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 4096), password.encode()
                )
                for name, password in passwords.items()
            ]
        )
    )
    bindings = []
    for user in production_users():
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            for operation in acl["operations"]:
                bindings.append(
                    AclBinding(
                        RESOURCE[resource["type"]],
                        resource.get("name", "kafka-cluster"),
                        PATTERN[resource.get("patternType", "literal")],
                        f"User:{user['metadata']['name']}",
                        "*",
                        OPERATION[operation],
                        AclPermissionType.ALLOW,
                    )
                )
    _wait(admin.create_acls(bindings))
    # The topics exist before any service starts (Strimzi's KafkaTopic resources).
    topics = Topics()
    asyncio.run(
        ensure_topics(
            broker.bootstrap_servers,
            {
                topics.referrals: 3,
                topics.request_stats: 3,
                topics.hub("thanet"): 1,
                topics.hub("maidstone"): 1,
            },
        )
    )
    return passwords


def as_user(broker, name: str, password: str, *, cafile: Path | None = None) -> KafkaSecurity:
    """The settings a service reads, as its environment would give them."""
    return KafkaSecurity(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=name,
        sasl_password=password,
        ssl_cafile=str(cafile or broker.certificates.ca),
    )


async def send(broker, security: KafkaSecurity, topic: str, value: bytes) -> None:
    producer = Producer(broker.sasl_bootstrap_servers, security=security, idempotent=True, request_timeout_ms=8000)
    try:
        await producer.send_many([OutgoingMessage(topic=topic, key=b"k", value=value)])
    finally:
        await producer.stop()


async def read(broker, security: KafkaSecurity, topic: str, *, group: str, expect: bytes) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=broker.sasl_bootstrap_servers,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        **client_options(security),
    )
    seen: list[bytes] = []
    try:
        await consumer.start()
        async with asyncio.timeout(30):
            while expect not in seen:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    seen += [m.value for m in messages]
    finally:
        await consumer.stop()
    return seen


async def test_each_service_signs_in_as_its_own_principal_and_the_acls_let_the_pipeline_through(broker, principals):
    topics = Topics()
    value = f"referral {uuid.uuid4()}".encode()
    # referrals' relay writes the referrals topic, with the idempotent producer (Write implies IdempotentWrite).
    await send(broker, as_user(broker, "referrals", principals["referrals"]), topics.referrals, value)
    # fulfilment reads it in its own group and writes a hub's topic.
    fulfilment = as_user(broker, "fulfilment", principals["fulfilment"])
    assert value in await read(broker, fulfilment, topics.referrals, group="fulfilment", expect=value)
    await send(broker, fulfilment, topics.hub("thanet"), value)
    # The hub's own system reads its topic, in a group under its prefix.
    hub = as_user(broker, "hub-thanet", principals["hub-thanet"])
    assert value in await read(broker, hub, topics.hub("thanet"), group="hub-thanet-case-system", expect=value)


async def test_a_hub_principal_cannot_read_another_hubs_topic_nor_write_its_own(broker, principals):
    topics = Topics()
    hub = as_user(broker, "hub-thanet", principals["hub-thanet"])
    with pytest.raises(TopicAuthorizationFailedError):
        await read(broker, hub, topics.hub("maidstone"), group="hub-thanet-snooping", expect=b"never")
    # Refused before a topic is named: the idempotent producer needs Write somewhere.
    with pytest.raises((TopicAuthorizationFailedError, ClusterAuthorizationFailedError)):
        await send(broker, hub, topics.hub("thanet"), b"forged")


async def test_a_hub_principal_cannot_join_a_group_outside_its_prefix(broker, principals):
    hub = as_user(broker, "hub-thanet", principals["hub-thanet"])
    with pytest.raises(GroupAuthorizationFailedError):
        await read(broker, hub, Topics().hub("thanet"), group="fulfilment", expect=b"never")


async def test_the_referrals_principal_cannot_write_a_hubs_topic(broker, principals):
    with pytest.raises(TopicAuthorizationFailedError):
        await send(broker, as_user(broker, "referrals", principals["referrals"]), Topics().hub("thanet"), b"x")


async def test_a_wrong_password_fails_at_once_naming_the_settings(broker, principals):
    security = as_user(broker, "referrals", "not-the-password")
    async with asyncio.timeout(60):
        with pytest.raises(KafkaSetupError) as refused:
            await send(broker, security, Topics().referrals, b"x")
    message = str(refused.value)
    assert "KAFKA_SASL_USERNAME='referrals'" in message and "KAFKA_SASL_PASSWORD" in message
    assert "not-the-password" not in message


async def test_an_untrusted_broker_certificate_fails_at_once_naming_the_ca_setting(broker, principals, tmp_path):
    stranger = make_certificates(tmp_path / "other", ca_name="Not the cluster's CA")
    security = as_user(broker, "referrals", principals["referrals"], cafile=stranger.ca)
    async with asyncio.timeout(60):
        with pytest.raises(KafkaSetupError) as refused:
            await ensure_topics(broker.sasl_bootstrap_servers, {"kt.never": 1}, security=security)
    assert f"KAFKA_SSL_CAFILE={stranger.ca}" in str(refused.value)
    assert "certificate" in str(refused.value)
