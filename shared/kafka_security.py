"""How every Kafka client of the platform authenticates: TLS and SASL settings, read once.

The embedded default is PLAINTEXT (the embedded broker has no TLS or SASL). A
secured cluster (Strimzi: SASL_SSL with SCRAM-SHA-512, the cluster CA mounted
as a file) is configured by environment variables:

    KAFKA_SECURITY_PROTOCOL   PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
    KAFKA_SASL_MECHANISM      PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (default; only with SASL_*)
    KAFKA_SASL_USERNAME       required with SASL_*
    KAFKA_SASL_PASSWORD       required with SASL_*; never logged, never in a repr or an error
    KAFKA_SSL_CAFILE          the CA that signed the brokers' certificates (else the system's CAs)
    KAFKA_SSL_CERTFILE        a client certificate, for mutual TLS (optional)
    KAFKA_SSL_KEYFILE         its private key, if not in the certificate file (optional)

`client_options` turns them into aiokafka's keyword arguments: it is the one
place they are built, and every producer, consumer and admin client the
services and the CLI make is given them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

log = logging.getLogger(__name__)

PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ENV_PREFIX = "KAFKA_"


def variable(field: str) -> str:
    """The environment variable of a field: `sasl_username` → `KAFKA_SASL_USERNAME`."""
    return (ENV_PREFIX + field).upper()


class KafkaSecurity(BaseSettings):
    """TLS and SASL for the Kafka clients; invalid combinations are refused when the settings are read."""

    # hide_input_in_errors: a refused combination must not print the password it was given.
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", hide_input_in_errors=True)

    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: SecretStr = SecretStr("")
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @model_validator(mode="after")
    def _coherent(self) -> KafkaSecurity:
        protocol = self.security_protocol
        if protocol not in PROTOCOLS:
            raise ValueError(f"{variable('security_protocol')}={protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.uses_sasl:
            if self.sasl_mechanism not in MECHANISMS:
                raise ValueError(
                    f"{variable('sasl_mechanism')}={self.sasl_mechanism!r} is not one of {', '.join(MECHANISMS)}"
                )
            if not self.sasl_username:
                raise ValueError(
                    f"{variable('sasl_username')} is required with {variable('security_protocol')}={protocol}"
                )
            if not self.sasl_password.get_secret_value():
                raise ValueError(
                    f"{variable('sasl_password')} is required with {variable('security_protocol')}={protocol}"
                )
        else:
            # Credentials given to a protocol that never sends them: a forgotten KAFKA_SECURITY_PROTOCOL.
            for name in ("sasl_username", "sasl_password"):
                value = getattr(self, name)
                if value.get_secret_value() if isinstance(value, SecretStr) else value:
                    raise ValueError(
                        f"{variable(name)} is set but {variable('security_protocol')}={protocol} "
                        f"does not use SASL (SASL_SSL or SASL_PLAINTEXT does)"
                    )
        files = ("ssl_cafile", "ssl_certfile", "ssl_keyfile")
        if not self.uses_tls:
            for name in files:
                if getattr(self, name):
                    raise ValueError(
                        f"{variable(name)} is set but {variable('security_protocol')}={protocol} "
                        f"does not use TLS (SSL or SASL_SSL does)"
                    )
        else:
            if self.ssl_keyfile and not self.ssl_certfile:
                raise ValueError(f"{variable('ssl_keyfile')} is set without {variable('ssl_certfile')}")
            for name in files:
                path = getattr(self, name)
                if path and not Path(path).is_file():
                    raise ValueError(f"{variable(name)}={path!r}: no such file")
        return self

    def describe(self) -> str:
        """For logs: the protocol, mechanism, user and files; never the password."""
        parts = [self.security_protocol]
        if self.uses_sasl:
            parts.append(f"{self.sasl_mechanism} as {self.sasl_username}")
        if self.uses_tls:
            parts.append(f"CA {self.ssl_cafile or '(system)'}")
            if self.ssl_certfile:
                parts.append(f"client certificate {self.ssl_certfile}")
        return ", ".join(parts)


class ClientOptions(dict[str, Any]):
    """aiokafka's keyword arguments; the password is masked if the options are ever printed."""

    def __repr__(self) -> str:
        shown = {k: ("**********" if k == "sasl_plain_password" else v) for k, v in self.items()}
        return f"ClientOptions({shown!r})"

    __str__ = __repr__


def client_options(security: KafkaSecurity | None = None) -> ClientOptions:
    """The keyword arguments for any AIOKafkaProducer, AIOKafkaConsumer or AIOKafkaAdminClient.

    None means PLAINTEXT (tests and benchmarks against the embedded broker). The
    SSL context is made on each call, so a client made after a CA rotation reads
    the renewed file.
    """
    if security is None:
        return ClientOptions(security_protocol="PLAINTEXT")
    options = ClientOptions(security_protocol=security.security_protocol)
    if security.uses_tls:
        from aiokafka.helpers import create_ssl_context

        options["ssl_context"] = create_ssl_context(
            cafile=security.ssl_cafile or None,
            certfile=security.ssl_certfile or None,
            keyfile=security.ssl_keyfile or None,
        )
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = security.sasl_password.get_secret_value()
    return options


def check_transport(security: KafkaSecurity, environment: str) -> None:
    """Log how the clients connect; warn when production talks to Kafka in plain text.

    Only a warning: some clusters sit on a private network where PLAINTEXT is a choice.
    """
    log.info("kafka clients connect with %s", security.describe())
    if environment == "production" and security.security_protocol == "PLAINTEXT":
        log.warning(
            "KT_ENVIRONMENT=production with %s=PLAINTEXT: Kafka traffic is neither encrypted nor "
            "authenticated, and the cluster's ACLs cannot tell the services apart",
            variable("security_protocol"),
        )


class KafkaSetupError(KafkaConnectionError):  # type: ignore[misc]  # aiokafka ships no type information (no py.typed)
    """The cluster refused this client's TLS or SASL settings; the message names the setting to fix."""


async def diagnose(bootstrap_servers: str, security: KafkaSecurity | None) -> str | None:
    """Why a secured client could not connect, naming the setting; None if it is not TLS or SASL.

    aiokafka reports only "Unable to bootstrap" (the cause goes to a log line), so
    one connection to the first bootstrap server is made again, by hand, to read it.
    """
    if security is None or not (security.uses_tls or security.uses_sasl):
        return None
    import ssl

    from aiokafka import errors
    from aiokafka.conn import create_conn

    host, _, port = bootstrap_servers.split(",")[0].strip().rpartition(":")
    options = client_options(security)
    try:
        connection = await create_conn(
            host,
            int(port),
            request_timeout_ms=10_000,
            ssl_context=options.get("ssl_context"),
            security_protocol=security.security_protocol,
            sasl_mechanism=options.get("sasl_mechanism"),
            sasl_plain_username=options.get("sasl_plain_username"),
            sasl_plain_password=options.get("sasl_plain_password"),
        )
    except ssl.SSLCertVerificationError as error:
        return (
            f"the broker at {host}:{port} has a certificate this client does not trust "
            f"({error.verify_message}): {variable('ssl_cafile')}="
            f"{security.ssl_cafile or '(unset: the system CAs)'} must be the CA that signed it"
        )
    except ssl.SSLError as error:
        return (
            f"TLS with the broker at {host}:{port} failed ({error.reason or error}): is it a "
            f"{security.security_protocol} listener? ({variable('security_protocol')}, "
            f"{variable('ssl_cafile')}, {variable('ssl_certfile')})"
        )
    except errors.SaslAuthenticationFailed:
        return (
            f"the broker at {host}:{port} refused {security.sasl_mechanism} sign-in as "
            f"{variable('sasl_username')}={security.sasl_username!r}: check {variable('sasl_password')} "
            f"(and that the user exists for {variable('sasl_mechanism')}={security.sasl_mechanism})"
        )
    except errors.UnsupportedSaslMechanismError:
        return (
            f"the broker at {host}:{port} does not offer {variable('sasl_mechanism')}="
            f"{security.sasl_mechanism} on this listener"
        )
    except Exception:  # unreachable, or something else: aiokafka's own error stands
        return None
    connection.close()
    return None


async def start_client(client: Any, *, bootstrap_servers: str, security: KafkaSecurity | None) -> None:
    """`await client.start()`, with a refused TLS or SASL setup named in the error (KafkaSetupError)."""
    try:
        await client.start()
    except KafkaConnectionError as error:
        reason = await diagnose(bootstrap_servers, security)
        if reason is None:
            raise
        raise KafkaSetupError(f"Kafka: {reason}") from error
