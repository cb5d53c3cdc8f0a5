"""Every service of the suite, built as production builds it, for tests that walk all of them.

Services come from the suite's registry (suite/registry.py), so one that lands later
joins the role walk, the fuzzing and the header checks without a change here.
Background work (relay, consumers, schedulers, topic creation) is switched off:
these tests are about the HTTP surface.
"""

from __future__ import annotations

import importlib.util
import inspect
import shutil
from dataclasses import dataclass
from pathlib import Path

from shared.openapi import api_routes
from suite import registry
from tests.support.apps import test_topics
from tests.support.databases import sqlite_template


def service_names() -> list[str]:
    return registry.names(registry.SERVICES)


def consuming_services() -> list[str]:
    """The services that consume events (each has a `handlers` module, as STYLE.md lays out)."""
    return [
        spec.name
        for spec in registry.SERVICES
        if importlib.util.find_spec(f"{spec.create_app.__module__.rsplit('.', 1)[0]}.handlers") is not None
    ]


def settings_class(name: str):
    return registry.spec(name).settings_class


def make_settings(name: str, *, database_url: str, broker, signing_key: str, unique: str, var_dir: Path, **overrides):
    cls = settings_class(name)
    values = dict(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        jwt_signing_key=signing_key,
        topics=test_topics(unique),
        var_dir=var_dir,
        log_json=False,
        run_relay=False,
        run_consumers=False,
    )
    for field in cls.model_fields:
        if field.startswith(("run_", "create_")) and field not in values:
            values[field] = False
    values.update({k: v for k, v in overrides.items() if k in cls.model_fields})
    return cls(**values)


def sqlite_database(name: str, *, tmp_path: Path, scratch: Path) -> str:
    """A migrated SQLite database of its own for service `name`."""
    target = tmp_path / f"{name}.db"
    shutil.copy(sqlite_template(name, scratch), target)
    return f"sqlite+aiosqlite:///{target}"


def build_app(name: str, settings, **shared_resources):
    """The service's `create_app(settings)`, with whichever shared resources it accepts (e.g. `directory`)."""
    create_app = registry.spec(name).create_app
    accepted = inspect.signature(create_app).parameters
    return create_app(settings, **{k: v for k, v in shared_resources.items() if k in accepted})


@dataclass(frozen=True)
class Operation:
    """One documented operation of an app: `GET /v1/hubs/{hub}`, with the route's dependencies."""

    method: str
    path: str
    dependant: object

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def operations(app) -> list[Operation]:
    """Every operation the app's OpenAPI document shows, each with its route's dependant."""
    documented = {
        f"{method.upper()} {path}"
        for path, item in app.openapi()["paths"].items()
        for method in item
        if method != "parameters"
    }
    found = [
        Operation(method, route.path, route.dependant)
        for route in api_routes(app)
        for method in sorted((route.methods or set()) - {"HEAD"})
        if f"{method} {route.path}" in documented
    ]
    assert {str(op) for op in found} == documented, "every documented operation is found among the routes"
    return found
