"""The services' data: `anonymise-expired`, `import-referrals`, `replay` (reporting's figures), `republish`, `import-actions`,
`replay-dead-letters`."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shared.settings import ServiceSettings
from suite import registry
from suite.common import console, operator, safe_url

if TYPE_CHECKING:
    from rich.console import Console


def anonymise_expired() -> None:
    """Anonymise the referrals past their retention period now (the referrals service also does it hourly)."""
    from services.referrals.app import ReferralsSettings
    from services.referrals.models import tables
    from services.referrals.service import RetentionScheduler
    from shared.app import build_runtime

    settings = ReferralsSettings()
    runtime = build_runtime(settings, tables)

    async def main() -> list[str]:
        retention = RetentionScheduler(
            uow_factory=runtime.uow,
            topics=settings.topics,
            poll_seconds=0,
            audit=runtime.audit,
            closed_for=timedelta(days=settings.retention_closed_days),
            kept_for=timedelta(days=settings.retention_kept_days),
        )
        try:
            return await retention.run_once()
        finally:
            await runtime.producer.stop()
            await runtime.db.dispose()

    ids = asyncio.run(main())
    typer.echo(f"anonymised {len(ids)} referrals; their erasure events go out with the next relay run")


def import_referrals(
    file: Annotated[
        Path,
        typer.Argument(
            help="A CSV or .xlsx in the template's shape (GET /v1/referrals/imports/template)",
            exists=True,
            dir_okay=False,
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what each row would be, and store nothing")
    ] = False,
) -> None:
    """Import a list of residents and their needs (docs/api.md, "Bulk import"): a re-run creates nothing new."""
    from services.referrals import imports
    from services.referrals.app import ReferralsSettings
    from services.referrals.models import tables
    from shared.app import build_runtime

    runtime = build_runtime(ReferralsSettings(), tables)
    total = imports.count_rows(file)

    async def main() -> Any:
        try:
            with typer.progressbar(length=total, label="dry run" if dry_run else "importing") as bar:
                done = 0

                def advance(read: int) -> None:
                    nonlocal done
                    bar.update(read - done)
                    done = read

                return await imports.import_file(
                    runtime.uow, path=file, dry_run=dry_run, audit=runtime.audit, on_progress=advance
                )
        finally:
            await runtime.producer.stop()
            await runtime.db.dispose()

    report = asyncio.run(main())
    typer.echo(
        ", ".join(f"{status}: {n}" for status, n in report.counts.items())
        + ("  (dry run: nothing stored)" if dry_run else f"; {report.created} referrals created")
    )
    for row in report.rows:
        for error in row.errors:
            typer.echo(f"  row {row.row}: {row.status}: {error['field']} {error['reason']}")


def replay(
    force: Annotated[
        bool, typer.Option("--force", help="Rebuild even if the topics hold less than the figures")
    ] = False,
) -> None:
    """Rebuild reporting's figures from its topics, from their beginnings; refused if that would lose figures.

    Refused, changing nothing, when a topic no longer starts at its first event or
    when the topics rebuild fewer requests, referrals or actions than reporting holds
    (an embedded broker restarted empty): republish first (`kent-together republish`).
    The rebuild is one transaction: the old figures stay until it commits. Safe beside
    a running reporting service, whose consumer waits for it.
    """
    from services.reporting.app import SPEC, ReportingSettings, consumed_topics
    from services.reporting.models import tables
    from services.reporting.service import ReplayRefused
    from services.reporting.service import replay as replay_topics
    from shared.app import build_runtime
    from shared.db import upgrade

    settings = ReportingSettings()
    upgrade(SPEC.migrations, settings.database_url)
    runtime = build_runtime(settings, tables)

    async def main() -> int:
        try:
            return await replay_topics(
                runtime.uow,
                inbox=tables.inbox,
                consumer=settings.consumer_group,
                bootstrap_servers=settings.kafka_bootstrap_servers,
                topics=consumed_topics(settings),
                security=settings.kafka,
                force=force,
            )
        finally:
            await runtime.producer.stop()
            await runtime.db.dispose()

    try:
        count = asyncio.run(main())
    except ReplayRefused as refused:
        typer.echo(f"replay refused: {refused}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"replayed {count} events into reporting: {safe_url(settings.database_url)}")


def republish(
    service: Annotated[str, typer.Argument(help="referrals, fulfilment or actions")],
    since: Annotated[
        str | None,
        typer.Option(help="Send the outbox rows kept from this time (ISO 8601) again, instead of the current state"),
    ] = None,
    until: Annotated[str | None, typer.Option(help="With --since: up to this time (default now)")] = None,
) -> None:
    """Publish a service's events again so reporting can be rebuilt (`kent-together replay`).

    By default the current state: every request (referrals), assignment (fulfilment) or
    action (actions) as it is now, as new events that read models fold idempotently.
    With --since: the published outbox rows kept for that range (see
    <SERVICE>_OUTBOX_RETENTION_DAYS), sent again as they were. The service's relay
    sends them; start the suite if it is not running.
    """
    from shared.app import build_runtime
    from shared.db import upgrade, utcnow
    from shared.outbox import republish as republish_range
    from shared.outbox import republish_state

    publishing = {spec.name: spec for spec in registry.publishing()}
    if service not in publishing:
        typer.echo(f"error: {service!r} publishes nothing to republish; one of: {', '.join(publishing)}", err=True)
        raise typer.Exit(2)

    def when(text: str, option: str) -> datetime:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            typer.echo(f"error: {option} {text!r} is not a time (ISO 8601, e.g. 2026-12-01T09:00)", err=True)
            raise typer.Exit(2) from None
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    window = (when(since, "--since"), when(until, "--until") if until else utcnow()) if since else None
    spec = publishing[service]
    assert spec.tables is not None  # a publishing service has its outbox
    settings = spec.settings()
    upgrade(spec.migrations, settings.database_url)
    tables = spec.tables
    runtime = build_runtime(settings, tables)

    async def main() -> int:
        try:
            if window:
                return await republish_range(db=runtime.db, table=tables.outbox, since=window[0], until=window[1])
            return await republish_state(
                runtime.uow,
                page=lambda uow, after, limit: spec.republish_state(uow, after, limit, topics=settings.topics),
            )
        finally:
            await runtime.producer.stop()
            await runtime.db.dispose()

    count = asyncio.run(main())
    what = "outbox rows marked to send again" if window else "records' current state published to the outbox"
    typer.echo(f"{service}: {count:,} {what}; the service's relay sends them")


def import_actions(
    file: Annotated[
        Path,
        typer.Argument(
            help="The plan's tab-separated text, or the export's .csv or .xlsx",
            exists=True,
            dir_okay=False,
            readable=True,
        ),
    ],
    plan: Annotated[str, typer.Option(help="The plan's slug")] = "krf-recovery-2020",
    starts_on: Annotated[
        str | None, typer.Option(help="The plan's start (YYYY-MM-DD): due dates count from it")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change, and change nothing")] = False,
) -> None:
    """Import a recovery plan's actions into the actions service, with a per-row report.

    The same use case as POST /v1/plans/{plan}/import: actions are created or
    updated by (cell, number) in one transaction; tracking is never overwritten;
    a file with any rejected row changes nothing. Events wait in the outbox for
    the service's relay.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from services.actions import service as actions_service
    from services.actions.app import SPEC, ActionsSettings
    from services.actions.models import tables
    from shared.app import build_runtime
    from shared.auth import ROLE_SCOPES, Principal
    from shared.db import upgrade
    from shared.errors import ValidationFailed

    out = console()
    try:
        start = date.fromisoformat(starts_on) if starts_on else None
    except ValueError:
        out.print(f"[red]error:[/] --starts-on {starts_on!r} is not a date (YYYY-MM-DD)")
        raise typer.Exit(2) from None
    settings = ActionsSettings()
    upgrade(SPEC.migrations, settings.database_url)
    runtime = build_runtime(settings, tables)
    by = Principal(subject=f"cli:{operator()}", role="admin", scopes=ROLE_SCOPES["admin"])

    async def main(progress: Progress, task: TaskID) -> dict[str, Any]:
        try:
            report: dict[str, Any] = await actions_service.import_plan(
                runtime.uow(),
                plan=plan,
                upload=actions_service.PlanUpload(filename=file.name, content=file.read_bytes()),
                by=by,
                starts_on=start,
                dry_run=dry_run,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
            return report
        finally:
            await runtime.producer.stop()
            await runtime.db.dispose()

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out, transient=False) as progress:
        task = progress.add_task(f"importing {file.name}", total=None)
        try:
            report = asyncio.run(main(progress, task))
        except ValidationFailed as error:
            rejected = error.extensions.get("report")
            for problem in error.extensions.get("errors", []):
                out.print(f"[red]rejected[/] {problem['field']}: {problem['reason']}")
            if rejected is None:
                raise typer.Exit(1) from None
            _print_import_report(out, rejected)
            out.print("[red]nothing was changed[/]")
            raise typer.Exit(1) from None
    _print_import_report(out, report)


def _print_import_report(out: Console, report: dict[str, Any]) -> None:
    counts = report["counts"]
    updated = [row for row in report["rows"] if row["outcome"] == "updated"]
    for row in updated[:20]:
        out.print(f"updated row {row['row']}: {row['cell']} {row['number']} ({', '.join(row['changed'])})")
    if len(updated) > 20:
        out.print(f"… and {len(updated) - 20} more updated")
    for reference in report["links"]["unresolved"]:
        out.print(f"[yellow]unresolved cross reference[/] {reference}")
    state = "dry run, nothing changed" if report["dry_run"] else ("applied" if report["applied"] else "not applied")
    out.print(
        f"{report['plan']}: {counts['created']} created, {counts['updated']} updated, "
        f"{counts['unchanged']} unchanged, {counts['rejected']} rejected ({state})"
    )
    out.print(
        f"links from the plan's cross references: {report['links']['created']} added, "
        f"{report['links']['removed']} removed"
    )


def replay_dead_letters_command(
    group: Annotated[str, typer.Argument(help="The consumer group whose dead letters to replay, e.g. fulfilment")],
    event_id: Annotated[list[str] | None, typer.Option("--event-id", help="Only these events (repeatable)")] = None,
) -> None:
    """Send the messages parked on kt.dlq.GROUP back to the topics they came from (after fixing the cause)."""
    from shared.bus import Producer
    from shared.deadletters import replay_dead_letters
    from shared.kafka_security import check_transport
    from shared.settings import Topics

    settings = ServiceSettings()
    check_transport(settings.kafka, settings.environment)
    producer = Producer(
        settings.kafka_bootstrap_servers, security=settings.kafka, idempotent=settings.kafka_idempotent_producer
    )

    async def main() -> int:
        try:
            return await replay_dead_letters(
                bootstrap_servers=settings.kafka_bootstrap_servers,
                producer=producer,
                dead_letter_topic=Topics().dead_letter_prefix + group,
                event_ids=set(event_id) if event_id else None,
                security=settings.kafka,
            )
        finally:
            await producer.stop()

    typer.echo(f"replayed {asyncio.run(main())} dead letters of {group}")
