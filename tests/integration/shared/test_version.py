"""Every service says which version runs: pyproject.toml's, on /health and as kt_build_info on /metrics."""

import re
import tomllib
from pathlib import Path

import pytest

from suite import registry
from tests.support.apps import running
from tests.support.services import build_app, make_settings, service_names, sqlite_database

VERSION = tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())["project"]["version"]


@pytest.fixture
def databases(tmp_path, tmp_path_factory) -> dict[str, str]:
    """A migrated SQLite database per service and the web front (migrations run outside the test's loop)."""
    return {
        name: sqlite_database(name, tmp_path=tmp_path, scratch=tmp_path_factory.getbasetemp())
        for name in registry.names()
    }


@pytest.mark.parametrize("name", service_names())
async def test_every_service_reports_the_pyproject_version_on_health_and_in_build_info(
    name, databases, tmp_path, broker, signing_key, unique
):
    url = databases[name]
    settings = make_settings(
        name, database_url=url, broker=broker, signing_key=signing_key, unique=unique, var_dir=tmp_path / "var"
    )
    async with running(build_app(name, settings)) as client:
        health = (await client.get("/health")).json()
        metrics = (await client.get("/metrics")).text
    assert health == {"status": "ok", "service": name, "version": VERSION}
    assert re.search(rf'^kt_build_info\{{.*service="{name}",version="{re.escape(VERSION)}"\}} 1\.0$', metrics, re.M)


async def test_the_web_front_reports_the_pyproject_version_on_health(databases, tmp_path, signing_key):
    from services.web.app import WebSettings

    spec = registry.WEB
    settings = WebSettings(
        database_url=databases[spec.name], jwt_signing_key=signing_key, var_dir=tmp_path / "var", log_json=False
    )
    async with running(spec.create_app(settings)) as client:
        health = (await client.get("/health")).json()
    assert health == {"status": "ok", "service": "web", "version": VERSION}
