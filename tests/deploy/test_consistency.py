"""Everything the deployment files name exists in the code: services, ports, variables, topics."""

from __future__ import annotations

import pytest
import yaml

from shared.settings import Topics
from suite.registry import SERVICES, WEB
from tests.deploy.conftest import (
    DEPLOY,
    HUBS,
    OVERLAYS,
    code_topics,
    consumer_groups,
    environment_names,
    service_port,
)

SERVICE_NAMES = [spec.name for spec in SERVICES]
WEB_NAME = WEB.name
SERVED = SERVICE_NAMES + [WEB_NAME]
"""What the deployments serve: the four services and the web front."""


def our_compose_services(compose: dict) -> dict[str, dict]:
    """The compose services that run the platform's image (not Kafka, not PostgreSQL)."""
    return {name: s for name, s in compose["services"].items() if "kent-together" in s.get("image", "")}


def served(command: list[str]) -> str | None:
    """`serve SERVICE` → SERVICE; None for one-shot commands such as `migrate`."""
    return command[1] if command and command[0] == "serve" else None


def workloads(documents: list[dict]) -> list[dict]:
    return [d for d in documents if d["kind"] in ("Deployment", "Job")]


def config_keys(documents: list[dict], kind: str, name: str) -> set[str]:
    [found] = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name]
    return set(found.get("data", {})) | set(found.get("stringData", {}))


def container_environment(documents: list[dict], container: dict) -> set[str]:
    """The variables a container sees: its own, and every key of the ConfigMaps and Secrets it loads."""
    names = {e["name"] for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            names |= config_keys(documents, "ConfigMap", source["configMapRef"]["name"])
        if "secretRef" in source:
            names |= config_keys(documents, "Secret", source["secretRef"]["name"])
    return names


def allowed_environment(service: str | None) -> set[str]:
    """What a container may set: its service's settings; a one-shot command may set any service's."""
    if service is not None:
        return environment_names(service)
    return set().union(*(environment_names(name) for name in SERVED))


def kubernetes_topics(documents: list[dict]) -> dict[str, tuple[int, str]]:
    return {
        d["spec"]["topicName"]: (d["spec"]["partitions"], str(d["spec"]["config"]["retention.ms"]))
        for d in documents
        if d["kind"] == "KafkaTopic"
    }


def dead_letter_topics() -> set[str]:
    return {Topics().dead_letter_prefix + group for group in consumer_groups().values()}


# -- services and ports


def test_compose_and_kubernetes_run_all_four_services_and_the_web_front(compose, rendered):
    in_compose = {served(s["command"]) for s in our_compose_services(compose).values()} - {None}
    assert in_compose == set(SERVED)
    for overlay in OVERLAYS:
        in_kubernetes = {
            c["args"][1]
            for d in workloads(rendered[overlay])
            for c in d["spec"]["template"]["spec"]["containers"]
            if c["args"][0] == "serve"
        }
        assert in_kubernetes == set(SERVED)


def test_every_port_is_the_port_of_the_service_it_serves(compose, rendered):
    for name, service in our_compose_services(compose).items():
        for mapping in service.get("ports", []):
            host, container = str(mapping).split(":")
            assert int(host) == int(container) == service_port(served(service["command"])), name
    for overlay in OVERLAYS:
        documents = rendered[overlay]
        for d in workloads(documents):
            for container in d["spec"]["template"]["spec"]["containers"]:
                if container["args"][0] != "serve":
                    continue
                port = service_port(container["args"][1])
                assert [p["containerPort"] for p in container["ports"]] == [port]
                assert d["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
        for service in (d for d in documents if d["kind"] == "Service"):
            assert [p["port"] for p in service["spec"]["ports"]] == [service_port(service["metadata"]["name"])]


def test_every_api_service_selects_pods_that_exist(rendered):
    documents = rendered["production"]
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in documents if d["kind"] == "Deployment"]
    for service in (d for d in documents if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= labels.items() for labels in pod_labels), service["metadata"]["name"]


# -- environment variables


def test_every_variable_in_compose_is_a_settings_field_of_that_service(compose):
    for name, service in our_compose_services(compose).items():
        unknown = set(service["environment"]) - allowed_environment(served(service["command"]))
        assert unknown == set(), f"{name} sets variables no settings class reads: {sorted(unknown)}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_in_kubernetes_is_a_settings_field_of_that_service(rendered, overlay):
    documents = rendered[overlay]
    for d in workloads(documents):
        for container in d["spec"]["template"]["spec"]["containers"]:
            service = container["args"][1] if container["args"][0] == "serve" else None
            unknown = container_environment(documents, container) - allowed_environment(service)
            assert unknown == set(), (
                f"{d['metadata']['name']} sets variables no settings class reads: {sorted(unknown)}"
            )


def test_every_service_gets_its_own_database_url(compose, rendered):
    for service in our_compose_services(compose).values():
        if (name := served(service["command"])) is not None:
            assert f"{name.upper()}_DATABASE_URL" in service["environment"]
    documents = rendered["production"]
    for d in workloads(documents):
        for container in d["spec"]["template"]["spec"]["containers"]:
            if container["args"][0] == "serve":
                assert f"{container['args'][1].upper()}_DATABASE_URL" in container_environment(documents, container)


# -- topics


def plan() -> list:
    from shared.topic_plan import topic_plan

    return topic_plan(list(HUBS))


def test_the_topic_plan_names_every_topic_of_the_code_and_no_other():
    assert {spec.name for spec in plan()} == code_topics() | dead_letter_topics()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubernetes_declares_every_topic_of_the_plan_and_no_other(rendered, overlay):
    assert set(kubernetes_topics(rendered[overlay])) == {spec.name for spec in plan()}


def test_the_strimzi_topics_file_is_the_one_written_from_the_plan():
    from shared.topic_plan import strimzi_manifest

    committed = (DEPLOY / "k8s" / "base" / "kafka-topics.yaml").read_text()
    assert committed == strimzi_manifest(plan()), "run `kent-together topics-manifest` and commit the file"


def test_compose_makes_the_topics_from_the_plan_before_any_service_starts():
    compose = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    job = compose["services"]["kafka-topics"]
    assert job["command"] == ["create-topics"]
    assert job["image"].startswith("${KT_IMAGE")
    for name, service in compose["services"].items():
        if service.get("image", "").startswith("${KT_IMAGE") and name not in ("kafka-topics", "migrate"):
            assert service["depends_on"]["kafka-topics"]["condition"] == "service_completed_successfully", name


def test_personal_data_topics_expire_and_reporting_topics_are_kept_for_a_rebuild(rendered):
    topics = kubernetes_topics(rendered["production"])
    settings = Topics()
    for personal in [settings.referrals] + [settings.hub(hub) for hub in HUBS]:
        assert int(topics[personal][1]) > 0
    for rebuild in (settings.request_stats, settings.assignment_status, settings.actions):
        assert topics[rebuild][1] == "-1"


def test_every_acl_names_a_topic_or_group_that_exists(rendered):
    known_topics = code_topics() | dead_letter_topics()
    for user in (d for d in rendered["production"] if d["kind"] == "KafkaUser"):
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            if resource["type"] != "topic":
                continue
            if resource.get("patternType") == "prefix":
                assert any(t.startswith(resource["name"]) for t in known_topics), resource
            else:
                assert resource["name"] in known_topics, resource


def readers(users: list[dict], topic: str) -> set[str]:
    """The principals whose ACLs let them read `topic`."""
    found = set()
    for user in users:
        for acl in user["spec"]["authorization"]["acls"]:
            resource = acl["resource"]
            matches = (
                topic.startswith(resource["name"])
                if resource.get("patternType") == "prefix"
                else topic == resource["name"]
            )
            if resource["type"] == "topic" and matches and {"Read", "All"} & set(acl["operations"]):
                found.add(user["metadata"]["name"])
    return found


def test_a_hubs_topic_is_readable_only_by_that_hubs_principal(rendered):
    users = [d for d in rendered["production"] if d["kind"] == "KafkaUser"]
    for hub in HUBS:
        assert readers(users, Topics().hub(hub)) == {f"hub-{hub}"}


def test_referral_events_are_readable_only_by_fulfilment_and_reporting_reads_no_personal_data(rendered):
    users = [d for d in rendered["production"] if d["kind"] == "KafkaUser"]
    topics = Topics()
    assert readers(users, topics.referrals) == {"fulfilment"}
    groups = consumer_groups()
    reporting_reads = {t for t in code_topics() if "reporting" in readers(users, t)}
    assert reporting_reads == {topics.request_stats, topics.assignment_status, topics.actions}
    consumer_acls = {
        u["metadata"]["name"]: {
            a["resource"]["name"] for a in u["spec"]["authorization"]["acls"] if a["resource"]["type"] == "group"
        }
        for u in users
    }
    assert groups["fulfilment"] in consumer_acls["fulfilment"] and groups["reporting"] in consumer_acls["reporting"]


# -- Kafka authentication: each service logs in as its own KafkaUser

KAFKA_CA_SECRET = "kt-kafka-cluster-ca-cert"
"""The Secret in which Strimzi keeps the cluster CA of the Kafka cluster kt-kafka."""


def container_values(documents: list[dict], container: dict) -> dict[str, object]:
    """What each variable of a container is: a literal, or the secret key it is read from."""
    values: dict[str, object] = {}
    for source in container.get("envFrom", []):
        for kind, ref in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if ref in source:
                [found] = [d for d in documents if d["kind"] == kind and d["metadata"]["name"] == source[ref]["name"]]
                values.update(found.get("data", {}), **found.get("stringData", {}))
    for entry in container.get("env", []):
        if "valueFrom" in entry:
            values[entry["name"]] = entry["valueFrom"]
        else:
            values[entry["name"]] = entry["value"]
    return values


def deployments(documents: list[dict]):
    for d in documents:
        if d["kind"] == "Deployment":
            yield d, d["spec"]["template"]["spec"]["containers"][0]


def mounted_file(deployment: dict, container: dict, path: str) -> tuple[str, str] | None:
    """(secret, key) of the Secret file mounted at `path` in the container, if any."""
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    for mount in container.get("volumeMounts", []):
        directory = mount["mountPath"].rstrip("/") + "/"
        secret = volumes[mount["name"]].get("secret")
        if secret and path.startswith(directory):
            name = path[len(directory) :]
            for item in secret.get("items", []):
                if item["path"] == name:
                    return secret["secretName"], item["key"]
    return None


def test_production_services_authenticate_to_kafka_as_their_own_kafka_user(rendered):
    documents = rendered["production"]
    users = {d["metadata"]["name"]: d for d in documents if d["kind"] == "KafkaUser"}
    seen = set()
    for deployment, container in deployments(documents):
        service = deployment["metadata"]["labels"]["kent-together/service"]
        name = deployment["metadata"]["name"]
        values = container_values(documents, container)
        if service == WEB_NAME:
            continue  # never talks to Kafka: test_the_web_front_gets_no_kafka_settings_and_reaches_only_the_apis
        assert values["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert values["KAFKA_BOOTSTRAP_SERVERS"].endswith(":9093"), name  # the cluster's TLS listener
        assert values["KAFKA_SASL_USERNAME"] == service, name
        user = users[service]
        assert user["spec"]["authentication"]["type"] == values["KAFKA_SASL_MECHANISM"].lower(), name
        # Strimzi writes the user's password to a Secret named after the KafkaUser, key `password`.
        assert values["KAFKA_SASL_PASSWORD"] == {"secretKeyRef": {"name": service, "key": "password"}}, name
        assert mounted_file(deployment, container, values["KAFKA_SSL_CAFILE"]) == (KAFKA_CA_SECRET, "ca.crt"), name
        seen.add(service)
    assert seen == set(SERVICE_NAMES)


def test_production_kafka_settings_are_accepted_by_the_code(rendered, tmp_path):
    from shared.kafka_security import KafkaSecurity, client_options

    ca = tmp_path / "ca.crt"  # stands in for the mounted file: the settings check that it exists
    ca.write_text("")
    for deployment, container in deployments(rendered["production"]):
        if deployment["metadata"]["labels"]["kent-together/service"] == WEB_NAME:
            continue  # no Kafka client
        values = container_values(rendered["production"], container)
        fields = {
            name.removeprefix("KAFKA_").lower(): value
            for name, value in values.items()
            if name.removeprefix("KAFKA_").lower() in KafkaSecurity.model_fields
        }
        fields["sasl_password"] = "from-the-strimzi-secret"
        fields["ssl_cafile"] = str(ca)
        security = KafkaSecurity(**fields)
        assert security.uses_sasl and security.uses_tls, deployment["metadata"]["name"]
        assert (
            client_options(KafkaSecurity(**{**fields, "ssl_cafile": ""}))["sasl_plain_username"]
            == deployment["metadata"]["labels"]["kent-together/service"]
        )


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_migrate_job_gets_no_kafka_client_settings(rendered, overlay):
    """It never talks to Kafka; SASL without a username, or a CA file not mounted, would refuse to start."""
    documents = rendered[overlay]
    for job in (d for d in documents if d["kind"] == "Job"):
        for container in job["spec"]["template"]["spec"]["containers"]:
            names = container_environment(documents, container)
            assert not {n for n in names if n.startswith(("KAFKA_SASL_", "KAFKA_SSL_", "KAFKA_SECURITY_"))}


def test_compose_passes_the_kafka_client_settings_through_plaintext_by_default(compose):
    for name, service in our_compose_services(compose).items():
        environment = service["environment"]
        assert environment["KAFKA_SECURITY_PROTOCOL"] == "${KAFKA_SECURITY_PROTOCOL:-PLAINTEXT}", name
        for variable in ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SSL_CAFILE"):
            assert environment[variable].startswith("${" + variable), (name, variable)


# -- the web front


def test_the_web_front_gets_no_kafka_settings_and_reaches_only_the_apis_its_database_and_the_provider(rendered):
    for overlay in OVERLAYS:
        documents = rendered[overlay]
        [web] = [d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == WEB_NAME]
        names = container_environment(documents, web["spec"]["template"]["spec"]["containers"][0])
        assert not {
            n
            for n in names
            if n.startswith("KAFKA_SASL_") or n.startswith("KAFKA_SSL_") or n == "KAFKA_SECURITY_PROTOCOL"
        }, overlay
        [policy] = [d["spec"] for d in documents if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == WEB_NAME]
        apis = {
            peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]: rule["ports"][0]["port"]
            for rule in policy["egress"]
            for peer in rule["to"]
            if "podSelector" in peer and "namespaceSelector" not in peer
        }
        assert apis == {f"{name}-api": service_port(name) for name in SERVICE_NAMES}
        for name in SERVICE_NAMES:  # and each API lets it in, on its port
            [api] = [
                d["spec"] for d in documents if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == f"{name}-api"
            ]
            assert any(
                peer.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": WEB_NAME}
                and rule["ports"][0]["port"] == service_port(name)
                for rule in api["ingress"]
                for peer in rule["from"]
            ), name


def test_the_web_fronts_production_settings_start_and_pass_the_providers_tokens_on(rendered, tmp_path):
    """kt-config, kt-web-config and the secrets as rendered (their placeholders filled) make settings the web front
    accepts in production: OpenID Connect, no development sign-in, the people's own tokens, a Secure cookie, the
    APIs by their Services' names and ports, and the public address the Ingress serves."""
    from services.web.app import WebSettings
    from shared.crypto import new_key

    documents = rendered["production"]
    [web] = [d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == WEB_NAME]
    values = {
        k: v
        for k, v in container_values(documents, web["spec"]["template"]["spec"]["containers"][0]).items()
        if isinstance(v, str)
    }
    values.update(
        KT_DATA_KEYS=f"2026-01:{new_key()}",
        KT_BLIND_INDEX_KEY=new_key(),
        KT_JWT_ONLINE_FORM_KEY="f" * 48,
        WEB_OIDC_CLIENT_SECRET="from-the-secret",
        KT_VAR_DIR=str(tmp_path),
    )
    import os

    saved = dict(os.environ)
    try:
        os.environ.update(values)
        settings = WebSettings()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert settings.environment == "production" and settings.dev_sign_in is False and settings.cookie_secure
    assert settings.service_tokens == "provider"
    services = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Service"}
    for name in SERVICE_NAMES:
        assert getattr(settings, f"{name}_url") == f"http://{name}:{services[name]['spec']['ports'][0]['port']}"
    [ingress] = [d for d in documents if d["kind"] == "Ingress"]
    [host] = [rule["host"] for rule in ingress["spec"]["rules"]]
    assert settings.public_url == f"https://{host}" and ingress["spec"]["tls"][0]["hosts"] == [host]
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {
        "name": WEB_NAME,
        "port": {"name": "http"},
    }
