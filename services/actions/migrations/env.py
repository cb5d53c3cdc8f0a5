from services.actions.models import metadata
from shared.db import run_migrations


def service_database_url() -> str:
    """The database the service uses, for the plain `alembic -n actions …` commands (alembic.ini)."""
    from services.actions.app import ActionsSettings

    return ActionsSettings().database_url


run_migrations(metadata, default_url=service_database_url)
