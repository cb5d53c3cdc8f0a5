"""Tokens and keys: `token` (a development JWT), `keygen` (production keys), `rekey` (finish a key rotation)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated

import typer

from shared.auth import ROLES, mint_token
from shared.settings import ServiceSettings
from suite import registry
from suite.common import safe_url

if TYPE_CHECKING:
    from shared import rekey as r
    from shared.crypto import Keyring
    from shared.spec import ServiceSpec


def token(
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}")],
    hub: Annotated[str | None, typer.Option(help="The hub's slug, for --role hub")] = None,
    subject: Annotated[str | None, typer.Option(help="Who the token is for")] = None,
    hours: Annotated[int, typer.Option(help="Hours until it expires")] = 12,
    name: Annotated[str | None, typer.Option(help="The person's name as colleagues know it (the `name` claim)")] = None,
) -> None:
    """Print a development JWT for ROLE (embedded default only)."""
    if hub is not None and hub not in registry.HUB_SLUGS:
        typer.echo(f"error: there is no hub {hub!r}; the hubs are {', '.join(registry.HUB_SLUGS)}", err=True)
        raise typer.Exit(2)
    try:
        typer.echo(development_token(role=role, hub=hub, subject=subject, hours=hours, name=name))
    except (ValueError, RuntimeError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None


def development_token(
    *, role: str, hub: str | None = None, subject: str | None = None, hours: float = 12, name: str | None = None
) -> str:
    """A token signed with the embedded default's key, as the services there verify it."""
    settings = ServiceSettings()
    return mint_token(
        signing_key=settings.signing_key(),
        role=role,
        hub=hub,
        subject=subject,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        ttl_seconds=int(hours * 3600),
        name=name,
    )


def keygen(
    key_id: Annotated[str, typer.Option("--id", help="The new data key's id (e.g. the month: 2026-01)")],
) -> None:
    """Print new production keys: a data key `id:base64` (put it first in KT_DATA_KEYS) and a KT_BLIND_INDEX_KEY."""
    from shared.crypto import DEV_KEY_PREFIX, new_key, parse_data_keys

    line = f"{key_id}:{new_key()}"
    try:
        parse_data_keys(line)
        if key_id.startswith(DEV_KEY_PREFIX):
            raise ValueError(f"ids starting with {DEV_KEY_PREFIX!r} mark development keys: production refuses them")
    except Exception as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"KT_DATA_KEYS entry:  {line}")
    typer.echo(f"KT_BLIND_INDEX_KEY:  {new_key()}   (only for a new installation: see docs/security.md)")


def rekey(
    service: Annotated[str | None, typer.Argument(help="referrals, fulfilment or web; all if omitted")] = None,
    batch: Annotated[int, typer.Option(help="Rows per transaction", min=1)] = 500,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would change, and change nothing")] = False,
) -> None:
    """Finish a key rotation: seal every value again with the first key of KT_DATA_KEYS, and make every blind index
    again with KT_BLIND_INDEX_KEY.

    Safe while the service runs and takes referrals (a commit per batch; a row changed
    meanwhile is read again, never overwritten). Run it with the keys the services run
    with. At the end it prints which data keys still seal something: when it is only
    the first, the others can be removed from KT_DATA_KEYS, and KT_BLIND_INDEX_KEY_PREVIOUS
    can go (docs/security.md, "Rotating keys").
    """
    specs = registry.personal()
    names = registry.names(specs)
    if service is not None and service not in names:
        typer.echo(f"error: {service!r} holds no sealed data; one of: {', '.join(names)}", err=True)
        raise typer.Exit(2)
    finished = True
    for spec in specs:
        if service is None or spec.name == service:
            finished = _rekey_service(spec, batch=batch, dry_run=dry_run) and finished
    if not finished and not dry_run:
        raise typer.Exit(1)


def _rekey_service(spec: ServiceSpec, *, batch: int, dry_run: bool) -> bool:
    """One service's rekey and census, printed; True when only the sealing key seals its data."""
    from shared import rekey as r
    from shared.db import Database

    assert spec.tables is not None  # personal: it has tables
    settings = spec.settings()
    keyring = settings.keyring()
    metadata, derived = spec.tables.metadata, spec.rekey_indexes
    previous = "set (lookups match either key)" if keyring.has_previous_index_key else "not set"
    typer.echo(f"{spec.name}: {safe_url(settings.database_url)}{'  (dry run: nothing is changed)' if dry_run else ''}")
    typer.echo(
        f"  sealing with data key {keyring.sealing_key_id!r} (KT_DATA_KEYS holds {', '.join(keyring.key_ids)}); "
        f"KT_BLIND_INDEX_KEY_PREVIOUS {previous}"
    )
    typer.echo(
        f"  {'table':<20} {'examined':>9} {'re-sealed':>10} {'indexes':>8} {'changed meanwhile':>18} "
        f"{'left':>5} {'unreadable':>10}"
    )

    def show(report: r.TableReport) -> None:
        typer.echo(
            f"  {report.table:<20} {report.examined:>9} {report.resealed:>10} {report.reindexed:>8} "
            f"{report.changed_meanwhile:>18} {report.left:>5} {report.unreadable:>10}"
        )

    async def main() -> r.Census:
        db = Database(settings.database_url)
        try:
            await r.rekey(db, metadata, keyring, derived=derived, batch=batch, dry_run=dry_run, progress=show)
            return await r.census(db, metadata, keyring, derived=derived)
        finally:
            await db.dispose()

    return _print_census(spec.name, asyncio.run(main()), keyring, derived=bool(derived))


def _print_census(name: str, found: r.Census, keyring: Keyring, *, derived: bool) -> bool:
    """What still seals data in one service; True when only the sealing key does."""
    in_use = ", ".join(f"{key_id} ({count})" for key_id, count in found.key_ids.most_common()) or "none"
    typer.echo(f"  data keys still sealing values: {in_use}")
    for column, ids in found.by_column.items():
        others = {k: v for k, v in ids.items() if k != keyring.sealing_key_id}
        if others:
            typer.echo(f"    {column}: {', '.join(f'{k} ({v})' for k, v in sorted(others.items()))}")
    if derived:
        typer.echo(f"  blind indexes not made with KT_BLIND_INDEX_KEY: {found.stale_indexes}")
    if found.unreadable:
        typer.echo(f"  values no key opens: {found.unreadable}")
    if found.finished:
        removable = [k for k in keyring.key_ids if k != keyring.sealing_key_id]
        typer.echo(
            f"  done: only {keyring.sealing_key_id!r} seals data in {name}"
            + (f"; {', '.join(removable)} no longer needed here" if removable else "")
            + ("; KT_BLIND_INDEX_KEY_PREVIOUS no longer needed here" if keyring.has_previous_index_key else "")
        )
        return True
    typer.echo(f"  not finished: keep every key until a run ends with only {keyring.sealing_key_id!r}")
    return False
