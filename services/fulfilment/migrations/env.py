from services.fulfilment.models import metadata
from shared.db import run_migrations


def service_database_url() -> str:
    """The database the service uses, for the plain `alembic -n fulfilment …` commands (alembic.ini)."""
    from services.fulfilment.app import FulfilmentSettings

    return FulfilmentSettings().database_url


run_migrations(metadata, default_url=service_database_url)
