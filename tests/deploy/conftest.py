"""The deployment files as an operator would use them: rendered, parsed, and read back against the code."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shared.kafka_security import KafkaSecurity
from shared.kafka_security import variable as kafka_variable
from shared.settings import ServiceSettings, Topics
from suite import registry

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
OVERLAYS = ("staging", "production")
HUBS = (
    "ashford",
    "canterbury",
    "dartford",
    "dover",
    "folkestone-hythe",
    "gravesham",
    "maidstone",
    "sevenoaks",
    "swale",
    "thanet",
    "tonbridge-malling",
    "tunbridge-wells",
)


def kubectl() -> str:
    """The machine's kubectl, or the one `make install` put beside the virtual environment's python."""
    found = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
    if not os.access(found, os.X_OK):
        pytest.fail("no kubectl to render deploy/k8s: `make install` fetches one")
    return found


def render(overlay: str) -> list[dict]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(DEPLOY / "k8s" / "overlays" / overlay)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(scope="session")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())


def service_settings_class(name: str) -> type[ServiceSettings]:
    return registry.spec(name).settings_class


def service_port(name: str) -> int:
    return registry.spec(name).port


def environment_names(name: str) -> set[str]:
    """Every environment variable the service's settings read: its prefixed fields, aliases, topics."""
    settings_class = service_settings_class(name)
    prefix = settings_class.model_config.get("env_prefix", "")
    names = set()
    for field_name, field in settings_class.model_fields.items():
        if field_name == "topics":
            topic_prefix = Topics.model_config["env_prefix"]
            names |= {(topic_prefix + topic).upper() for topic in Topics.model_fields}
        elif field_name == "kafka":
            names |= {kafka_variable(name) for name in KafkaSecurity.model_fields}
        elif isinstance(field.validation_alias, str):
            names.add(field.validation_alias.upper())
        else:
            names.add((prefix + field_name).upper())
    return names


def code_topics() -> set[str]:
    """Every topic the code can name: the fixed topics and one per hub."""
    topics = Topics()
    return set(topics.declared()) | {topics.hub(hub) for hub in HUBS}


def consumer_groups() -> dict[str, str]:
    """Consumer group of each consuming service (the service's name where it has no setting)."""
    from tests.support.services import consuming_services

    groups = {}
    for name in consuming_services():
        field = service_settings_class(name).model_fields.get("consumer_group")
        groups[name] = field.default if field is not None else name
    return groups
