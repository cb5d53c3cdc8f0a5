"""Settings: one pydantic-settings class per service, built on this base.

The embedded default needs no configuration: SQLite files under `var/` and the
embedded broker on 127.0.0.1:9092. Production sets environment variables.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.auth import Claims
from shared.crypto import DEV_KEY_PREFIX, Keyring, dev_keyring_text
from shared.kafka_security import KafkaSecurity

DEV_ISSUER = "kent-together-dev"
AUDIENCE = "kent-together"

PORTS = {"referrals": 8001, "fulfilment": 8002, "actions": 8003, "reporting": 8004, "web": 8005}
"""Each service's port under `make run` (plus KT_PORT_OFFSET), in start order: the one table of them."""


class Topics(BaseSettings):
    """Kafka topic names; the defaults are the public contract (docs/events.md)."""

    model_config = SettingsConfigDict(env_prefix="KT_TOPIC_", extra="ignore")

    referrals: str = "kt.referrals.v1"
    """Personal data: read by fulfilment only."""
    request_stats: str = "kt.requests.stats.v1"
    """No personal data: one event per request for reporting."""
    dead_letter_prefix: str = "kt.dlq."
    actions: str = "kt.actions.v1"
    """No personal data: recovery-plan actions created and tracked, for reporting."""
    assignment_status: str = "kt.assignments.status.v1"
    """No personal data: every assignment transition and escalation, for reporting."""
    hubs: str = "kt.hub.{hub}.v1"
    """Personal data: one topic per district hub; a pattern, made per hub by `hub(slug)`."""

    def declared(self) -> list[str]:
        """Every fixed topic of the platform (per-hub and dead-letter topics are made as needed)."""
        return [
            value
            for name, value in self
            if name != "dead_letter_prefix" and isinstance(value, str) and "{" not in value
        ]

    def hub(self, slug: str) -> str:
        """One hub's topic: `kt.hub.thanet.v1`."""
        return self.hubs.format(hub=slug)

    def personal(self, topic: str) -> bool:
        """Whether events on `topic` carry personal data: their outbox rows are sealed.

        Those a contract with a PERSONAL field is published on (shared/events `personal_topics`):
        today the referrals topic and every hub's.
        """
        from shared.events import personal_topics

        for field in personal_topics():
            name = getattr(self, field)
            head, pattern, tail = name.partition("{hub}")
            if topic == name or (pattern and topic.startswith(head) and topic.endswith(tail)):
                return True
        return False


class ServiceSettings(BaseSettings):
    """What every service needs; a service subclasses it with its own env prefix."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    service_name: str = "service"
    environment: Literal["development", "production"] = Field("development", validation_alias="KT_ENVIRONMENT")
    var_dir: Path = Field(Path("var"), validation_alias="KT_VAR_DIR")
    otel_traces_exporter: str = Field("none", validation_alias="OTEL_TRACES_EXPORTER")
    """`otlp` exports spans (OTLP over HTTP; OTEL_EXPORTER_OTLP_* say where), `none` (the default) does not."""
    otel_service_name: str = Field("", validation_alias="OTEL_SERVICE_NAME")
    """The service name spans carry; the service's own name (`referrals`…) when not set."""
    otel_traces_sampler_arg: float = Field(1.0, validation_alias="OTEL_TRACES_SAMPLER_ARG")
    """With export on, the share of new traces recorded (a caller's sampled trace is always followed)."""
    build_revision: str = Field("", validation_alias="KT_BUILD_REVISION")
    """The source revision the image was built from (a git commit), shown in `kt_build_info`."""
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS")
    kafka: KafkaSecurity = Field(default_factory=KafkaSecurity)
    """TLS and SASL for every Kafka client (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*)."""
    kafka_idempotent_producer: bool = Field(True, validation_alias="KAFKA_IDEMPOTENT_PRODUCER")
    """Apache Kafka has it; the embedded broker does not (`kent-together run` sets false when it starts it)."""
    database_url: str = ""
    """Per service, e.g. REFERRALS_DATABASE_URL; defaults to a SQLite file in var/."""
    database_busy_timeout_seconds: float = 30.0
    """SQLite: how long a writer waits for the write lock before the request is answered 503 with Retry-After."""

    # Auth: a local HS256 key in development, the identity provider's JWKS in production.
    jwt_signing_key: str = Field("", validation_alias="KT_JWT_SIGNING_KEY")
    jwt_jwks_url: str = Field("", validation_alias="KT_JWT_JWKS_URL")
    jwt_issuer: str = Field(DEV_ISSUER, validation_alias="KT_JWT_ISSUER")
    """One issuer, or several separated by commas (Entra ID: v1 `https://sts.windows.net/<tenant>/`, v2
    `https://login.microsoftonline.com/<tenant>/v2.0`)."""
    jwt_audience: str = Field(AUDIENCE, validation_alias="KT_JWT_AUDIENCE")
    """This service's audience, or several separated by commas (its Application ID URI, and for Power BI the
    URL it is reached at: Power BI asks for a token whose audience is the feed's scheme, host and port)."""
    jwt_role_claim: str = Field("role", validation_alias="KT_JWT_ROLE_CLAIM")
    """The claim with the caller's role (a string) or roles (a list): `roles` for Entra ID app roles."""
    jwt_hub_claim: str = Field("hub", validation_alias="KT_JWT_HUB_CLAIM")
    """The claim with hub staff's hub slug; an app role `hub.<slug>` names the hub as well."""
    jwt_role_map: dict[str, str] = Field(default_factory=dict, validation_alias="KT_JWT_ROLE_MAP")
    """The identity provider's role values to ours (JSON): `{"KentTogether.HubWorker": "hub"}`; read alike by the
    services (access tokens) and the web front (the ID token it signs a person in with)."""
    jwt_online_form_key: SecretStr = Field(SecretStr(""), validation_alias="KT_JWT_ONLINE_FORM_KEY")
    """With KT_JWT_JWKS_URL: an HS256 key that signs the web front's resident pages' tokens, for the online form's
    role only (docs/web.md); empty: none accepted."""
    jwt_authorization_uri: str = Field("", validation_alias="KT_JWT_AUTHORIZATION_URI")
    """Named in a 401's `WWW-Authenticate`, so Power BI can sign in (docs/security.md)."""
    jwks_refresh_seconds: float = Field(600.0, validation_alias="KT_JWKS_REFRESH_SECONDS")
    jwks_timeout_seconds: float = Field(5.0, validation_alias="KT_JWKS_TIMEOUT_SECONDS")
    """How long a request waits for the identity provider's keys before it is answered 503."""
    jwks_min_refetch_seconds: float = Field(30.0, validation_alias="KT_JWKS_MIN_REFETCH_SECONDS")
    """A token naming a key not held fetches the keys at most this often (tokens with made-up key ids)."""
    problem_type_base: str = Field("tag:kent-together,2026:problems/", validation_alias="KT_PROBLEM_TYPE_BASE")
    """Where problem `type` URIs point: the slug is appended (docs/api.md)."""

    # Residents' personal data, sealed at rest (shared/crypto.py; docs/security.md).
    data_keys: SecretStr = Field(SecretStr(""), validation_alias="KT_DATA_KEYS")
    """`id:base64key,id:base64key`: the first seals, every one opens (rotation: put the new key first)."""
    blind_index_key: SecretStr = Field(SecretStr(""), validation_alias="KT_BLIND_INDEX_KEY")
    """base64 of 32 bytes: the HMAC key of the blind indexes (search by phone, postcode, name word)."""
    blind_index_key_previous: SecretStr = Field(SecretStr(""), validation_alias="KT_BLIND_INDEX_KEY_PREVIOUS")
    """The blind-index key before the current one, while `kent-together rekey` recomputes the indexes: lookups
    match either. Remove it once rekey reports every index made with the current key."""

    # Outbox relay and consumers.
    run_relay: bool = True
    """Run the outbox relay inside the API process (also `kent-together relay`)."""
    run_consumers: bool = True
    outbox_batch_size: int = 500
    outbox_poll_seconds: float = 0.5
    outbox_retention_days: float = 7.0
    """Published outbox rows are kept this long so an operator can republish a range."""
    consumer_max_attempts: int = 5
    idempotency_retention_hours: float = Field(24.0, validation_alias="KT_IDEMPOTENCY_RETENTION_HOURS")
    """How long an `Idempotency-Key` and its answer are kept: a retry within it gets the first answer."""
    stop_grace_seconds: float = 10.0
    """On stop, how long background loops may take to finish the round in hand before they are cancelled."""
    inbox_retention_days: float | None = None
    """How long a consumer keeps the ids of events it handled, to ignore them if delivered again.

    None keeps them for ever. Set it only above the retention of every topic the
    service consumes: a consumer whose committed offsets expire (a group idle past
    the broker's offsets.retention) reads again from the oldest message the topic
    holds, and only the inbox then stops an event being handled twice."""
    consumer_session_timeout_ms: int = 10_000
    """How soon a dead consumer's partitions move to another instance."""
    consumer_max_event_bytes: int = 512 * 1024
    """A consumed message larger than this is dead-lettered unread (no event of ours comes near it)."""

    max_body_bytes: int = 256 * 1024
    max_upload_bytes: int = 6 * 1024 * 1024
    """The limit for multipart bodies (file uploads: the actions import takes a 5 MB file)."""

    # HTTP hardening (shared/security.py; docs/security.md).
    content_security_policy: str = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    """An API serves no page: nothing may load. A service with a page (the dashboard) sets its own."""
    docs_content_security_policy: str = (
        "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    """For /docs and /redoc only: Swagger UI and ReDoc, served by the service (shared/docs_pages.py), start with an
    inline script; nothing loads from elsewhere."""
    cors_allow_origins: list[str] = []
    """Browser origins allowed to call the API (a JSON list); none by default."""
    rate_limit_per_minute: int = 6000
    """Requests per minute per client (token subject, else address), per instance; 0 turns limits off."""
    rate_limit_burst: int = 1000
    trusted_proxies: list[str] = Field(default_factory=list, validation_alias="KT_TRUSTED_PROXIES")
    """Addresses or networks of the reverse proxies in front (a JSON list, e.g. ["10.0.0.0/8"]): only their
    X-Forwarded-For is believed, for rate limits and logs. None by default: the socket's peer is the client."""
    log_json: bool = Field(True, validation_alias="KT_LOG_JSON")
    log_level: str = Field("INFO", validation_alias="KT_LOG_LEVEL")

    topics: Topics = Field(default_factory=Topics)

    @model_validator(mode="after")
    def _embedded_defaults(self) -> ServiceSettings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.var_dir / (self.service_name + '.db')}"
        if self.environment == "production" and not self.jwt_jwks_url and not self.jwt_signing_key:
            raise ValueError("production needs KT_JWT_JWKS_URL (or KT_JWT_SIGNING_KEY)")
        return self

    def claims(self) -> Claims:
        """Which claims name the caller's role(s) and hub, and what the provider's role values mean."""
        return Claims(role=self.jwt_role_claim, hub=self.jwt_hub_claim, role_map=dict(self.jwt_role_map))

    def signing_key(self) -> str:
        """The HS256 key: configured, or the development key kept in var/ (made on first use)."""
        if self.jwt_signing_key:
            return self.jwt_signing_key
        if self.environment == "production":
            raise RuntimeError("development signing keys are refused in production")
        return dev_signing_key(self.var_dir)

    def keyring(self) -> Keyring:
        """The data and blind-index keys: configured, or the development keys kept in var/ (made on first use).

        Production refuses to start without configured keys, and refuses the
        development ones (their ids start with `dev`, or their bytes are this
        checkout's), as it refuses the development signing key.
        """
        data_keys, index_key = self.data_keys.get_secret_value(), self.blind_index_key.get_secret_value()
        previous_index_key = self.blind_index_key_previous.get_secret_value()
        if previous_index_key and not index_key:
            raise RuntimeError("KT_BLIND_INDEX_KEY_PREVIOUS is set without KT_BLIND_INDEX_KEY")
        if not data_keys and not index_key:
            if self.environment == "production":
                raise RuntimeError(
                    "production needs KT_DATA_KEYS and KT_BLIND_INDEX_KEY (see docs/security.md): "
                    "development data keys are refused in production"
                )
            return dev_keyring(self.var_dir)
        if not data_keys or not index_key:
            raise RuntimeError("set both KT_DATA_KEYS and KT_BLIND_INDEX_KEY, or neither (development only)")
        keyring = Keyring.from_text(data_keys, index_key, previous_index_key)
        if self.environment == "production":
            dev_ids = [key_id for key_id in keyring.key_ids if key_id.startswith(DEV_KEY_PREFIX)]
            if dev_ids or (has_dev_keyring(self.var_dir) and keyring.shares_material_with(dev_keyring(self.var_dir))):
                raise RuntimeError(
                    f"development data keys are refused in production ({dev_ids or 'the keys in var/'}): "
                    "make production keys with `kent-together keygen`"
                )
        return keyring


def dev_signing_key(var_dir: Path) -> str:
    """The per-checkout development key, so `kent-together token` and the services agree."""
    return _dev_secret(var_dir / "dev-signing-key", lambda: secrets.token_urlsafe(48))


def dev_keyring(var_dir: Path) -> Keyring:
    """The per-checkout development data keys, so every process of the embedded default opens what another sealed."""
    data_keys, index_key = _dev_secret(var_dir / "dev-data-keys", lambda: "\n".join(dev_keyring_text())).splitlines()
    return Keyring.from_text(data_keys, index_key)


def has_dev_keyring(var_dir: Path) -> bool:
    return (var_dir / "dev-data-keys").exists()


def _dev_secret(path: Path, make: Callable[[], str]) -> str:
    """A secret made once and kept in `path` (mode 600); concurrent starters all read the first one made."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(make())
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # atomic and never overwrites: concurrent starters agree
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
