from services.referrals.models import metadata
from shared.db import run_migrations


def service_database_url() -> str:
    """The database the service uses, for the plain `alembic -n referrals …` commands (alembic.ini)."""
    from services.referrals.app import ReferralsSettings

    return ReferralsSettings().database_url


run_migrations(metadata, default_url=service_database_url)
