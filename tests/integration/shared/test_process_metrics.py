"""What the council's monitoring scrapes: the process's own health and which build runs, without series noise."""

import re
import tomllib
from pathlib import Path

from services.reporting.app import ReportingSettings, create_app
from tests.support import apps
from tests.support.apps import running


def pyproject_version() -> str:
    return tomllib.loads((Path(__file__).resolve().parents[3] / "pyproject.toml").read_text())["project"]["version"]


async def scrape(settings) -> str:
    async with running(create_app(settings)) as client:
        await client.get("/health")  # one request counted, so the request counter has a series
        response = await client.get("/metrics")
    assert response.status_code == 200
    return response.text


def value(text: str, pattern: str) -> float:
    match = re.search(rf"^{pattern} (\S+)$", text, re.M)
    assert match, f"{pattern} not in /metrics"
    return float(match.group(1))


async def test_metrics_carry_the_process_memory_cpu_and_file_descriptors(reporting_sqlite_url, broker, unique, var_dir):
    settings = ReportingSettings(
        database_url=reporting_sqlite_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topics=apps.test_topics(unique),
        var_dir=var_dir,
        log_json=False,
        run_consumers=False,
        run_relay=False,
        jwt_signing_key="k" * 40,
    )
    text = await scrape(settings)
    assert value(text, "process_resident_memory_bytes") > 10_000_000
    assert value(text, "process_cpu_seconds_total") > 0
    assert value(text, "process_open_fds") >= 3
    assert re.search(r'^python_info\{.*version="3\.', text, re.M)
    assert re.search(r"^python_gc_collections_total\{", text, re.M)


async def test_metrics_name_the_build_and_carry_no_created_series(reporting_sqlite_url, broker, unique, var_dir):
    settings = ReportingSettings(
        database_url=reporting_sqlite_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topics=apps.test_topics(unique),
        var_dir=var_dir,
        log_json=False,
        run_consumers=False,
        run_relay=False,
        jwt_signing_key="k" * 40,
        build_revision="f39e44d",
    )
    text = await scrape(settings)
    version = re.escape(pyproject_version())
    assert (
        value(text, rf'kt_build_info\{{python="[0-9.]+",revision="f39e44d",service="reporting",version="{version}"\}}')
        == 1
    )
    assert "_created" not in text
    assert re.search(r"^kt_http_requests_total\{", text, re.M)  # a counter still reads as a counter
