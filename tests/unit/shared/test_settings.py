"""Settings: the embedded default needs nothing; production refuses development keys."""

import pytest
from pydantic import ValidationError

from services.referrals.app import ReferralsSettings


def test_the_embedded_default_is_a_sqlite_file_in_var(tmp_path):
    settings = ReferralsSettings(var_dir=tmp_path)
    assert settings.database_url == f"sqlite+aiosqlite:///{tmp_path}/referrals.db"
    assert settings.kafka_bootstrap_servers == "127.0.0.1:9092"


def test_each_service_reads_its_own_database_url(monkeypatch):
    monkeypatch.setenv("REFERRALS_DATABASE_URL", "postgresql+asyncpg://kt@db/kt_referrals")
    monkeypatch.setenv("FULFILMENT_DATABASE_URL", "postgresql+asyncpg://kt@db/kt_fulfilment")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    settings = ReferralsSettings()
    assert settings.database_url == "postgresql+asyncpg://kt@db/kt_referrals"
    assert settings.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_production_without_an_identity_provider_is_refused():
    with pytest.raises(ValidationError, match="KT_JWT_JWKS_URL"):
        ReferralsSettings(environment="production")


def test_the_development_key_is_made_once_and_shared(tmp_path):
    first = ReferralsSettings(var_dir=tmp_path).signing_key()
    assert ReferralsSettings(var_dir=tmp_path).signing_key() == first
    assert len(first) >= 40
