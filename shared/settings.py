"""Settings: one pydantic-settings class per service, built on this base.

The embedded default needs no configuration: SQLite files under `var/` and the
embedded broker on 127.0.0.1:9092. Production sets environment variables.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.kafka_security import KafkaSecurity

DEV_ISSUER = "kent-together-dev"
AUDIENCE = "kent-together"


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
            value for name, value in self
            if name != "dead_letter_prefix" and isinstance(value, str) and "{" not in value
        ]

    def hub(self, slug: str) -> str:
        """One hub's topic: `kt.hub.thanet.v1`."""
        return self.hubs.format(hub=slug)


class ServiceSettings(BaseSettings):
    """What every service needs; a service subclasses it with its own env prefix."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    service_name: str = "service"
    environment: Literal["development", "production"] = Field(
        "development", validation_alias="KT_ENVIRONMENT"
    )
    var_dir: Path = Field(Path("var"), validation_alias="KT_VAR_DIR")
    kafka_bootstrap_servers: str = Field(
        "127.0.0.1:9092", validation_alias="KAFKA_BOOTSTRAP_SERVERS"
    )
    kafka: KafkaSecurity = Field(default_factory=KafkaSecurity)
    """TLS and SASL for every Kafka client (KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*)."""
    database_url: str = ""
    """Per service, e.g. REFERRALS_DATABASE_URL; defaults to a SQLite file in var/."""

    # Auth: a local HS256 key in development, the identity provider's JWKS in production.
    jwt_signing_key: str = Field("", validation_alias="KT_JWT_SIGNING_KEY")
    jwt_jwks_url: str = Field("", validation_alias="KT_JWT_JWKS_URL")
    jwt_issuer: str = Field(DEV_ISSUER, validation_alias="KT_JWT_ISSUER")
    jwt_audience: str = Field(AUDIENCE, validation_alias="KT_JWT_AUDIENCE")

    # Outbox relay and consumers.
    run_relay: bool = True
    """Run the outbox relay inside the API process (also `kent-together relay`)."""
    run_consumers: bool = True
    outbox_batch_size: int = 500
    outbox_poll_seconds: float = 0.5
    outbox_retention_days: float = 7.0
    """Published outbox rows are kept this long so an operator can republish a range."""
    consumer_max_attempts: int = 5
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
        "default-src 'none'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
        "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
    """For /docs and /redoc only: FastAPI's pages load Swagger UI and ReDoc from a CDN with an inline script."""
    cors_allow_origins: list[str] = []
    """Browser origins allowed to call the API (a JSON list); none by default."""
    rate_limit_per_minute: int = 6000
    """Requests per minute per client (token subject, else address), per instance; 0 turns limits off."""
    rate_limit_burst: int = 1000
    log_json: bool = Field(True, validation_alias="KT_LOG_JSON")
    log_level: str = Field("INFO", validation_alias="KT_LOG_LEVEL")

    topics: Topics = Field(default_factory=Topics)

    @model_validator(mode="after")
    def _embedded_defaults(self) -> "ServiceSettings":
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.var_dir / (self.service_name + '.db')}"
        if self.environment == "production" and not self.jwt_jwks_url and not self.jwt_signing_key:
            raise ValueError("production needs KT_JWT_JWKS_URL (or KT_JWT_SIGNING_KEY)")
        return self

    def signing_key(self) -> str:
        """The HS256 key: configured, or the development key kept in var/ (made on first use)."""
        if self.jwt_signing_key:
            return self.jwt_signing_key
        if self.environment == "production":
            raise RuntimeError("development signing keys are refused in production")
        return dev_signing_key(self.var_dir)


def dev_signing_key(var_dir: Path) -> str:
    """The per-checkout development key, so `kent-together token` and the services agree."""
    path = var_dir / "dev-signing-key"
    if not path.exists():
        var_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".dev-signing-key.{os.getpid()}")
        tmp.write_text(secrets.token_urlsafe(48))
        tmp.chmod(0o600)
        try:
            os.link(tmp, path)  # atomic and never overwrites: concurrent starters agree
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
