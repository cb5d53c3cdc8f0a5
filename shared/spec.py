"""What a service declares about itself, for the suite above it (suite/registry.py) to run, migrate and rekey it.

Each service's `app.py` exports one `SPEC`; nothing is found by a string, a name
suffix or `getattr`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.settings import ServiceSettings, Topics

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shared.app import ServiceTables
    from shared.rekey import DerivedColumns
    from shared.uow import UnitOfWork

StatePage = Callable[..., Awaitable[tuple[str | None, int]]]
"""`publish_state_page(uow, after, limit, *, topics)`: one page of records published again as they are now."""

_MIGRATIONS: dict[str, Path] = {}


@dataclass(frozen=True, kw_only=True)
class ServiceSpec:
    """One service of the suite, as its `app.py` declares it."""

    name: str
    port: int
    """Its port under `make run` (plus KT_PORT_OFFSET); the table of them is `shared.settings.PORTS`."""
    settings_class: type[ServiceSettings]
    create_app: Callable[..., FastAPI]
    """`create_app(settings)`: the service, built as production builds it."""
    migrations: Path
    """Its Alembic directory: this service's tables only."""
    tables: ServiceTables | None = None
    """Its tables with the shared outbox, inbox and audit ones; None for the web front (sessions only)."""
    rekey_indexes: tuple[DerivedColumns, ...] = ()
    """What `kent-together rekey` recomputes beside the sealed columns it finds by type (blind indexes)."""
    publish_state_page: StatePage | None = None
    """For `kent-together republish`: the service's records as events again (producing services only)."""

    def __post_init__(self) -> None:
        _MIGRATIONS[self.name] = self.migrations

    @property
    def personal(self) -> bool:
        """Holds residents' personal data, sealed at rest with the keyring."""
        return self.tables is not None and self.tables.personal

    def settings(self, **values: Any) -> ServiceSettings:
        """Its settings, from the environment (and `values`), as the process running it reads them."""
        return self.settings_class(**values)

    async def republish_state(
        self, uow: UnitOfWork, after: str | None, limit: int, *, topics: Topics
    ) -> tuple[str | None, int]:
        if self.publish_state_page is None:
            raise ValueError(f"{self.name} publishes no events")
        return await self.publish_state_page(uow, after, limit, topics=topics)


def migrations_of(service: str) -> Path:
    """A declared service's migrations directory, by its name (`shared.db.upgrade("referrals", url)`)."""
    try:
        return _MIGRATIONS[service]
    except KeyError:
        raise LookupError(
            f"no service {service!r} is declared: import suite.registry (or the service's app "
            f"module) first, or pass its migrations directory"
        ) from None
