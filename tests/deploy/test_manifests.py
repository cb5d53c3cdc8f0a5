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
    text = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    schema = json.loads(text)
    return jsonschema.validators.validator_for(schema)(schema)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_every_resource_validates_against_its_schema(rendered, overlay):
    documents = rendered[overlay]
    kinds = {d["kind"] for d in documents}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Job", "Secret",
            "ConfigMap", "NetworkPolicy", "KafkaTopic", "KafkaUser", "Namespace"} <= kinds
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
        return {c["image"] for d in rendered[overlay] if d["kind"] in ("Deployment", "Job")
                for c in d["spec"]["template"]["spec"]["containers"]}

    assert images("production") == {"registry.kent.gov.uk/kent-together:1.0.0"}
    assert images("staging") == {"registry.kent.gov.uk/kent-together:staging"}
