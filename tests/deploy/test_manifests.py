"""The Kubernetes overlays render and validate; the compose file validates against the compose spec."""

from __future__ import annotations

import copy
import importlib.resources
import json

import jsonschema
import kubernetes_validate
import pytest

from tests.deploy import strimzi
from tests.deploy.conftest import OVERLAYS

KUBERNETES_VERSION = "1.30.0"
"""The oldest Kubernetes the manifests claim to run on."""


def kubernetes_problems(document: dict) -> list[str]:
    """Schema problems of one resource: Kubernetes' strict schemas, or Strimzi's for its custom resources."""
    kind = document.get("kind")
    if kind in strimzi.SCHEMAS:
        validator = jsonschema.Draft202012Validator(strimzi.SCHEMAS[kind])
        return [f"{kind} {document['metadata'].get('name')}: {e.message}" for e in validator.iter_errors(document)]
    try:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{kind} {document['metadata'].get('name')}: {error.message} at {list(error.path)}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{kind}: no schema for {document.get('apiVersion')}"]
    return []


def compose_validator() -> jsonschema.protocols.Validator:
    """The compose specification's JSON schema, as shipped inside the check-jsonschema package."""
    text = (
        importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    schema = json.loads(text)
    return jsonschema.validators.validator_for(schema)(schema)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_resource_validates_against_its_schema(rendered, overlay):
    documents = rendered[overlay]
    kinds = {d["kind"] for d in documents}
    assert {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "Job",
        "Secret",
        "ConfigMap",
        "NetworkPolicy",
        "KafkaTopic",
        "KafkaUser",
        "Namespace",
        "Ingress",
    } <= kinds
    problems = [p for d in documents for p in kubernetes_problems(d)]
    assert problems == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_puts_everything_in_its_own_namespace(rendered, overlay):
    namespaces = {d["metadata"].get("namespace") for d in rendered[overlay] if d["kind"] != "Namespace"}
    [namespace] = [d["metadata"]["name"] for d in rendered[overlay] if d["kind"] == "Namespace"]
    assert namespaces == {namespace}


def test_schema_validation_rejects_a_misspelt_field_and_a_bad_acl(rendered):
    deployment = copy.deepcopy(next(d for d in rendered["production"] if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/ready"
    user = copy.deepcopy(next(d for d in rendered["production"] if d["kind"] == "KafkaUser"))
    user["spec"]["authorization"]["acls"][0]["operations"] = ["Reed"]
    assert kubernetes_problems(deployment) and kubernetes_problems(user)


def test_compose_file_validates_against_the_compose_specification(compose):
    assert [e.message for e in compose_validator().iter_errors(compose)] == []


def test_compose_validation_rejects_an_unknown_service_key(compose):
    broken = copy.deepcopy(compose)
    broken["services"]["referrals"]["helthcheck"] = {"test": ["CMD", "true"]}
    assert list(compose_validator().iter_errors(broken))


def test_production_runs_the_releases_image_and_staging_its_own(rendered):
    def images(overlay):
        return {
            c["image"]
            for d in rendered[overlay]
            if d["kind"] in ("Deployment", "Job")
            for c in d["spec"]["template"]["spec"]["containers"]
        }

    assert images("production") == {"registry.kent.gov.uk/kent-together:1.0.0"}
    assert images("staging") == {"registry.kent.gov.uk/kent-together:staging"}


def by_kind(documents: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_deployment_has_probes_requests_a_disruption_budget_and_an_autoscaler(rendered, overlay):
    documents = rendered[overlay]
    budgets = by_kind(documents, "PodDisruptionBudget")
    autoscalers = by_kind(documents, "HorizontalPodAutoscaler")
    for name, deployment in by_kind(documents, "Deployment").items():
        pod = deployment["spec"]["template"]
        for container in pod["spec"]["containers"]:
            assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
            assert container["livenessProbe"]["httpGet"]["path"] == "/health"
            assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        assert budgets[name]["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
        assert autoscalers[name]["spec"]["scaleTargetRef"]["name"] == name


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_deny_by_default_and_let_each_workload_reach_only_what_it_needs(rendered, overlay):
    documents = rendered[overlay]
    policies = by_kind(documents, "NetworkPolicy")
    deny = policies["default-deny"]["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert not deny.get("ingress") and not deny.get("egress")
    workloads = list(by_kind(documents, "Deployment").values()) + list(by_kind(documents, "Job").values())
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        own = [
            p["spec"]
            for n, p in policies.items()
            if p["spec"]["podSelector"] and p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(own) == 1, workload["metadata"]["name"]
        web = labels.get("kent-together/service") == "web"
        for rule in own[0].get("egress", []):
            for peer in rule["to"]:
                # Never another of the platform's services: they talk only through Kafka.
                assert "kent-together/service" not in peer.get("podSelector", {}).get("matchLabels", {})
                assert "app.kubernetes.io/part-of" not in peer.get("podSelector", {}).get("matchLabels", {})
                # The web front, a client of the APIs, reaches their pods alone; nothing else reaches a service's.
                named = peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name", "")
                if "namespaceSelector" not in peer and named:
                    assert web and named.endswith("-api"), (workload["metadata"]["name"], named)
        ports = {p["port"] for rule in own[0].get("ingress", []) for p in rule["ports"]}
        assert ports <= {
            c["containerPort"] for c in workload["spec"]["template"]["spec"]["containers"][0].get("ports", [])
        }


def test_the_image_runs_as_a_non_root_user_with_a_health_check_and_copies_only_what_exists():
    from tests.deploy.conftest import DEPLOY, ROOT

    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    final_stage = dockerfile.split("\nFROM ")[-1]
    assert "\nUSER 10001:10001" in final_stage and "\nHEALTHCHECK " in final_stage
    for line in dockerfile.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), source


def test_the_entrypoint_serves_each_service_on_the_port_its_module_declares():
    import subprocess
    import sys

    from tests.deploy.conftest import DEPLOY, ROOT, service_port

    script = (DEPLOY / "docker" / "entrypoint.sh").read_text()
    lookup = script.split("port=\"$(python -c '")[1].split("'")[0]
    for name in ("referrals", "fulfilment", "actions"):
        out = subprocess.run([sys.executable, "-c", lookup, name], capture_output=True, text=True, cwd=ROOT)
        assert out.stdout.strip() == str(service_port(name)), out.stderr
    for shell_script in (
        DEPLOY / "docker" / "entrypoint.sh",
        DEPLOY / "tools" / "fetch-kafka.sh",
        DEPLOY / "tools" / "test-postgres.sh",
        DEPLOY / "compose" / "postgres-init.sh",
        DEPLOY / "tools" / "fetch-kubectl.sh",
    ):
        assert subprocess.run(["bash", "-n", str(shell_script)]).returncode == 0, shell_script
