from services.reporting.models import metadata
from shared.db import run_migrations


def service_database_url() -> str:
    """The database the service uses, for the plain `alembic -n reporting …` commands (alembic.ini)."""
    from services.reporting.app import ReportingSettings

    return ReportingSettings().database_url


run_migrations(metadata, default_url=service_database_url)
