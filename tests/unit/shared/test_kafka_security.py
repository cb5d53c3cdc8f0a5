"""Kafka client security: each protocol gives aiokafka the right arguments; bad settings never start.

No broker here: the arguments are checked as aiokafka receives them, and the
SSL contexts are built from real certificates made for the test.
"""

from __future__ import annotations

import ast
import datetime
import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from services.referrals.app import ReferralsSettings
from services.referrals.models import tables as referrals_tables
from shared.app import build_runtime
from shared.crypto import new_key
from shared.kafka_security import KafkaSecurity, check_transport, client_options

ROOT = Path(__file__).resolve().parents[3]
PASSWORD = "s3cr3t-scram-password-Zq9"


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@pytest.fixture
def ca_file(tmp_path) -> Path:
    return make_certificate(tmp_path, "kt-kafka-cluster-ca")[0]


# Production refuses to start without its data keys (shared/crypto.py).
PRODUCTION_DATA_KEYS = {"KT_DATA_KEYS": f"k1:{new_key()}", "KT_BLIND_INDEX_KEY": new_key()}


@pytest.fixture
def kafka_env(monkeypatch):
    """Set KAFKA_* variables as a container would; the rest stay unset."""

    def setenv(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return setenv


# -- each protocol gives the right arguments


def test_the_default_is_plaintext_with_no_credentials(kafka_env):
    settings = ReferralsSettings()
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert client_options(settings.kafka) == {"security_protocol": "PLAINTEXT"}
    assert client_options(None) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_gives_the_mechanism_and_credentials_and_no_tls(kafka_env, mechanism):
    kafka_env(
        KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        KAFKA_SASL_MECHANISM=mechanism,
        KAFKA_SASL_USERNAME="referrals",
        KAFKA_SASL_PASSWORD=PASSWORD,
    )
    assert client_options(ReferralsSettings().kafka) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "referrals",
        "sasl_plain_password": PASSWORD,
    }


def test_sasl_ssl_gives_credentials_and_a_context_that_trusts_the_cluster_ca(kafka_env, ca_file):
    kafka_env(
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="fulfilment",
        KAFKA_SASL_PASSWORD=PASSWORD,
        KAFKA_SSL_CAFILE=str(ca_file),
    )
    options = client_options(ReferralsSettings().kafka)
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "fulfilment",
        "sasl_plain_password": PASSWORD,
    }
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    trusted = [dict(part[0] for part in ca["subject"])["commonName"] for ca in context.get_ca_certs()]
    assert trusted == ["kt-kafka-cluster-ca"]


def test_ssl_without_sasl_gives_a_context_and_no_credentials(kafka_env, ca_file):
    kafka_env(KAFKA_SECURITY_PROTOCOL="SSL", KAFKA_SSL_CAFILE=str(ca_file))
    options = client_options(ReferralsSettings().kafka)
    assert set(options) == {"security_protocol", "ssl_context"}
    assert options["security_protocol"] == "SSL"
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_ssl_without_a_ca_file_verifies_against_the_systems_cas(kafka_env):
    kafka_env(KAFKA_SECURITY_PROTOCOL="SSL")
    context = client_options(ReferralsSettings().kafka)["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_a_client_certificate_is_loaded_for_mutual_tls(kafka_env, tmp_path, ca_file):
    cert, key = make_certificate(tmp_path, "referrals")
    kafka_env(
        KAFKA_SECURITY_PROTOCOL="SSL",
        KAFKA_SSL_CAFILE=str(ca_file),
        KAFKA_SSL_CERTFILE=str(cert),
        KAFKA_SSL_KEYFILE=str(key),
    )
    assert isinstance(client_options(ReferralsSettings().kafka)["ssl_context"], ssl.SSLContext)
    # The files are really read: a key that is not the certificate's is refused by OpenSSL.
    _, other_key = make_certificate(tmp_path, "someone-else")
    mismatched = KafkaSecurity(security_protocol="SSL", ssl_certfile=str(cert), ssl_keyfile=str(other_key))
    with pytest.raises(ssl.SSLError):
        client_options(mismatched)


def test_protocol_and_mechanism_are_read_in_any_case(kafka_env):
    kafka_env(
        KAFKA_SECURITY_PROTOCOL="sasl_plaintext",
        KAFKA_SASL_MECHANISM="scram-sha-256",
        KAFKA_SASL_USERNAME="actions",
        KAFKA_SASL_PASSWORD=PASSWORD,
    )
    options = client_options(ReferralsSettings().kafka)
    assert (options["security_protocol"], options["sasl_mechanism"]) == ("SASL_PLAINTEXT", "SCRAM-SHA-256")


# -- bad combinations are refused at start-up, naming the variable

REFUSED = [
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_PASSWORD": PASSWORD}, "KAFKA_SASL_USERNAME"),
    ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "referrals"}, "KAFKA_SASL_PASSWORD"),
    (
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": "GSSAPI",
            "KAFKA_SASL_USERNAME": "referrals",
            "KAFKA_SASL_PASSWORD": PASSWORD,
        },
        "KAFKA_SASL_MECHANISM",
    ),
    ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
    ({"KAFKA_SASL_USERNAME": "referrals", "KAFKA_SASL_PASSWORD": PASSWORD}, "KAFKA_SASL_USERNAME"),
    (
        {
            "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "KAFKA_SASL_USERNAME": "referrals",
            "KAFKA_SASL_PASSWORD": PASSWORD,
            "KAFKA_SSL_CAFILE": "/etc/kafka-ca/ca.crt",
        },
        "KAFKA_SSL_CAFILE",
    ),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.crt"}, "KAFKA_SSL_CAFILE"),
    ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": "/nonexistent/client.key"}, "KAFKA_SSL_KEYFILE"),
]


@pytest.mark.parametrize(
    ("environment", "named"), REFUSED, ids=[f"{named}-{i}" for i, (_, named) in enumerate(REFUSED)]
)
def test_a_bad_combination_is_refused_naming_the_variable_and_not_the_password(kafka_env, environment, named):
    kafka_env(**environment)
    with pytest.raises(ValidationError) as refused:
        ReferralsSettings()
    assert named in str(refused.value)
    assert PASSWORD not in str(refused.value) and PASSWORD not in repr(refused.value)


def test_the_cli_refuses_to_start_naming_the_variable(kafka_env):
    from typer.testing import CliRunner

    from suite.cli import app as cli

    kafka_env(KAFKA_SECURITY_PROTOCOL="SASL_SSL", KAFKA_SASL_USERNAME="fulfilment")
    result = CliRunner().invoke(cli, ["replay-dead-letters", "fulfilment"])
    assert result.exit_code != 0
    assert "KAFKA_SASL_PASSWORD" in str(result.exception)


# -- secrets never appear in a repr or a log


def test_the_password_never_appears_in_a_repr_a_dump_or_the_options_printed(kafka_env, ca_file):
    kafka_env(
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_USERNAME="reporting",
        KAFKA_SASL_PASSWORD=PASSWORD,
        KAFKA_SSL_CAFILE=str(ca_file),
    )
    settings = ReferralsSettings()
    options = client_options(settings.kafka)
    shown = [
        repr(settings),
        str(settings),
        repr(settings.kafka),
        settings.model_dump_json(),
        str(settings.model_dump()),
        settings.kafka.describe(),
        repr(options),
        str(options),
        f"{options}",
    ]
    for text in shown:
        assert PASSWORD not in text
    assert "reporting" in settings.kafka.describe()
    assert options["sasl_plain_password"] == PASSWORD  # what aiokafka gets is the real one


def test_start_up_logs_how_kafka_is_reached_without_the_password(kafka_env, caplog, ca_file):
    kafka_env(
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_USERNAME="referrals",
        KAFKA_SASL_PASSWORD=PASSWORD,
        KAFKA_SSL_CAFILE=str(ca_file),
        KT_ENVIRONMENT="production",
        KT_JWT_JWKS_URL="https://idp.example/jwks",
        **PRODUCTION_DATA_KEYS,
    )
    with caplog.at_level(logging.DEBUG):
        build_runtime(ReferralsSettings(), referrals_tables)
    messages = [record.getMessage() for record in caplog.records]
    assert any("SASL_SSL" in m and "SCRAM-SHA-512 as referrals" in m for m in messages)
    assert not any(PASSWORD in m for m in messages)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "kafka" in r.name]


# -- production in plain text is allowed, with a warning


def test_production_over_plaintext_starts_with_a_warning(kafka_env, caplog):
    kafka_env(KT_ENVIRONMENT="production", KT_JWT_JWKS_URL="https://idp.example/jwks", **PRODUCTION_DATA_KEYS)
    settings = ReferralsSettings()
    with caplog.at_level(logging.INFO):
        runtime = build_runtime(settings, referrals_tables)
    assert runtime.producer.security is settings.kafka
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "KAFKA_SECURITY_PROTOCOL=PLAINTEXT" in warnings[0]


def test_development_over_plaintext_does_not_warn(caplog):
    with caplog.at_level(logging.INFO):
        check_transport(KafkaSecurity(), "development")
    assert [r.levelno for r in caplog.records] == [logging.INFO]


# -- every client the services and the CLI make is given the options

KAFKA_CLIENTS = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient"}
SECURED_HELPERS = {
    "Producer",
    "EventConsumer",
    "ensure_topics",
    "replay_dead_letters",
    "replay_topics",
    "_create_topics",
}


def calls_in_code():
    for path in sorted(
        [*(ROOT / "shared").rglob("*.py"), *(ROOT / "services").rglob("*.py"), *(ROOT / "suite").rglob("*.py")]
    ):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                yield path.relative_to(ROOT), node, name


def test_every_kafka_client_in_the_code_is_built_with_the_client_options():
    found = []
    for path, call, name in calls_in_code():
        if name in KAFKA_CLIENTS:
            spread = [k.value for k in call.keywords if k.arg is None]
            assert any(isinstance(v, ast.Call) and getattr(v.func, "id", None) == "client_options" for v in spread), (
                f"{path}:{call.lineno} makes an {name} without **client_options(...)"
            )
            found.append(name)
    assert set(found) == KAFKA_CLIENTS  # the scan sees them (a renamed import would hide them)


def test_every_producer_consumer_and_topic_helper_in_the_code_is_given_the_settings_security():
    found = set()
    for path, call, name in calls_in_code():
        if name in SECURED_HELPERS and not (name == "Producer" and path.name == "bus.py"):
            keywords = {k.arg for k in call.keywords}
            assert "security" in keywords, f"{path}:{call.lineno} calls {name} without security="
            found.add(name)
    assert found == SECURED_HELPERS
