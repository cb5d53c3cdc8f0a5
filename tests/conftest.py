"""Fixtures shared by every suite: a real broker, real databases, real apps.

Integration tests run against SQLite and the PostgreSQL server at
127.0.0.1:5432 (trust auth), and the embedded tansu broker the fixture starts.
Nothing is mocked.
"""

from __future__ import annotations

import os
import secrets
import shutil
import uuid
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from shared.apache_kafka import SaslListener
from shared.bus import free_port
from tests.support.brokers import ControlledBroker, ControlledKafkaCluster
from tests.support.databases import PostgresTemplates, sqlite_template
from tests.support.kafka import TEST_BROKER
from tests.support.tls import make_certificates

# Tests build their own settings; never a developer's var/ or environment
# (only the test run's own choices, KT_TEST_*, and where Kafka's jars are, are kept).
for _name in list(os.environ):
    if _name.startswith(
        ("KT_", "KAFKA_", "REFERRALS_", "FULFILMENT_", "ACTIONS_", "REPORTING_")
    ) and not _name.startswith(("KT_TEST_", "KT_KAFKA_HOME")):
        del os.environ[_name]


if TEST_BROKER == "tansu":
    os.environ["KAFKA_IDEMPOTENT_PRODUCER"] = "false"  # tansu refuses InitProducerId


# The fault tests kill services and brokers and wait for a steady load to come through: run
# side by side they would starve each other of the machine's cores. With pytest-xdist
# (`make test` runs two workers) they run one after another on one worker, first, while the
# other worker takes every other file whole (a file's fixtures are set up once).
FAULTS = (
    "tests/e2e/test_kafka_faults.py",
    "tests/e2e/test_chaos.py",
    "tests/e2e/test_operations.py",
    "tests/e2e/test_referral_journey.py",
    "tests/e2e/test_stopping.py",
    "tests/integration/fulfilment/test_kill.py",
)


def _scope(nodeid: str) -> str:
    path = nodeid.split("::")[0]
    return "faults" if path in FAULTS else path


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: _scope(item.nodeid) != "faults")


def pytest_xdist_make_scheduler(config, log):
    """Whole files to each worker, the fault tests as one unit (not `xdist_group`: on pytest 9.2
    `--dist loadgroup` silently stops grouping, pytest-dev/pytest-xdist#1386)."""
    from xdist.scheduler import LoadScopeScheduling

    class FaultsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _scope(nodeid)

    return FaultsTogether(config, log)


@pytest.fixture(scope="session")
def broker(request, tmp_path_factory):
    """The session's broker: an Apache Kafka cluster on loopback, or the embedded one (KT_TEST_BROKER)."""
    if TEST_BROKER == "tansu":
        return request.getfixturevalue("embedded_broker")
    root = tmp_path_factory.mktemp("kafka")
    certificates = make_certificates(root / "tls")
    # A SASL_SSL (SCRAM-SHA-512) listener beside the plain one, ACLs enforced on it:
    # tests/integration/kafka creates the production principals and their ACLs.
    instance = ControlledKafkaCluster(
        root,
        nodes=3,
        sasl=SaslListener(keystore_pem=certificates.server, users={"admin": secrets.token_urlsafe(16)}),
    )
    instance.certificates = certificates
    request.addfinalizer(instance.stop)
    return instance.start()


@pytest.fixture(scope="session")
def embedded_broker(tmp_path_factory):
    """The embedded broker (tansu) that `make run` starts, for the files that run on both (`either_broker`)."""
    instance = ControlledBroker(port=free_port(), log_path=tmp_path_factory.mktemp("broker") / "broker.log")
    yield instance.start()
    instance.stop()


@pytest.fixture(params=sorted({TEST_BROKER, "tansu"}))
def either_broker(request, monkeypatch):
    """Apache Kafka, then the embedded broker: for the shared mechanisms `make run` relies on on both.

    A file runs on both by defining its own `broker` fixture that returns this one
    (tests/integration/shared/test_consumer.py, test_kafka_security.py).
    """
    if request.param == "tansu":
        monkeypatch.setenv("KAFKA_IDEMPOTENT_PRODUCER", "false")  # tansu refuses InitProducerId
        return request.getfixturevalue("embedded_broker")
    return request.getfixturevalue("broker")


@pytest.fixture(scope="session")
def postgres_templates():
    templates = PostgresTemplates()
    yield templates
    templates.drop_all()


@pytest.fixture
def unique():
    """A short unique suffix, so tests sharing a broker never share topics."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path, tmp_path_factory, postgres_templates):
    """A migrated, empty database for the service the test module names in `SERVICE`."""
    service = request.module.SERVICE
    if request.param == "sqlite":
        target = tmp_path / f"{service}.db"
        shutil.copy(sqlite_template(service, tmp_path_factory.getbasetemp()), target)
        return f"sqlite+aiosqlite:///{target}"
    return postgres_templates.fresh_database(service)


@pytest.fixture
def sqlite_only(database_url):
    """The SQLite file of `database_url`; the PostgreSQL case skipped (for tests of SQLite's database-wide write lock)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite's database-wide write lock; PostgreSQL locks rows")
    return make_url(database_url).database


@pytest.fixture
def signing_key():
    return "test-signing-key-" + "x" * 32


@pytest.fixture
def var_dir(tmp_path) -> Path:
    return tmp_path / "var"
