"""`kent-together`: the platform's command line (installed into .venv by `make run`)."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from shared.auth import ROLES, mint_token
from shared.bus import EmbeddedBroker, port_open
from shared.settings import ServiceSettings

app = typer.Typer(help="Kent Together platform commands.", no_args_is_help=True, add_completion=False)

# Every service of the suite, in start order: (name, port).
SERVICES = (("referrals", 8001), ("fulfilment", 8002), ("actions", 8003), ("reporting", 8004))


def installed_services() -> list[tuple[str, int]]:
    """The services that exist in this checkout so far."""
    found = []
    for name, port in SERVICES:
        try:
            importlib.import_module(f"services.{name}.app")
        except ModuleNotFoundError:
            continue
        found.append((name, port))
    return found


def service_settings(name: str) -> ServiceSettings:
    module = importlib.import_module(f"services.{name}.app")
    settings_class = next(
        value for key, value in vars(module).items()
        if key.endswith("Settings") and isinstance(value, type) and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
    )
    return settings_class()


@app.command()
def token(
    role: Annotated[str, typer.Option(help=f"One of: {', '.join(ROLES)}")],
    hub: Annotated[Optional[str], typer.Option(help="The hub's slug, for --role hub")] = None,
    subject: Annotated[Optional[str], typer.Option(help="Who the token is for")] = None,
    hours: Annotated[int, typer.Option(help="Hours until it expires")] = 12,
):
    """Print a development JWT for ROLE (embedded default only)."""
    settings = ServiceSettings()
    try:
        typer.echo(
            mint_token(
                signing_key=settings.signing_key(), role=role, hub=hub, subject=subject,
                issuer=settings.jwt_issuer, audience=settings.jwt_audience, ttl_seconds=hours * 3600,
            )
        )
    except (ValueError, RuntimeError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2)


@app.command()
def migrate(service: Annotated[Optional[str], typer.Argument(help="One service; all if omitted")] = None):
    """Apply Alembic migrations to each service's database."""
    from shared.db import upgrade

    for name, _ in installed_services():
        if service and name != service:
            continue
        settings = service_settings(name)
        upgrade(name, settings.database_url)
        typer.echo(f"migrated {name}: {_safe_url(settings.database_url)}")


@app.command()
def relay(service: Annotated[str, typer.Argument(help="The service whose outbox to publish")]):
    """Run an outbox relay on its own (scale out: several are safe on PostgreSQL)."""
    from shared.app import build_runtime

    module = importlib.import_module(f"services.{service}.models")
    runtime = build_runtime(service_settings(service), module.tables)

    async def main():
        try:
            await runtime.relay.run()
        finally:
            await runtime.producer.stop()
            await runtime.db.dispose()

    asyncio.run(main())


@app.command()
def run(
    only: Annotated[Optional[list[str]], typer.Option("--only", help="Start only these services")] = None,
    port_offset: Annotated[int, typer.Option(envvar="KT_PORT_OFFSET", help="Add to every service port")] = 0,
    broker_port: Annotated[int, typer.Option(envvar="KT_BROKER_PORT", help="Embedded broker port")] = 9092,
):
    """Start the suite: the embedded broker (unless KAFKA_BOOTSTRAP_SERVERS is set), migrations, services.

    A service that dies is started again; Ctrl-C stops everything.
    """
    services = [(n, p + port_offset) for n, p in installed_services() if not only or n in only]
    var_dir = ServiceSettings().var_dir
    var_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    broker = None
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        if port_open("127.0.0.1", broker_port):
            typer.echo(f"port {broker_port} is in use: using the broker already there")
        else:
            broker = EmbeddedBroker(port=broker_port, log_path=var_dir / "broker.log").start()
            typer.echo(f"embedded Kafka-protocol broker (tansu, in memory) on 127.0.0.1:{broker_port}; log in {var_dir}/broker.log")
        env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{broker_port}"
    asyncio.run(_create_topics(env["KAFKA_BOOTSTRAP_SERVERS"]))
    for name, _ in services:
        subprocess.run([sys.executable, "-m", "shared.cli", "migrate", name], check=True, env=env)

    def start(name: str, port: int) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", f"services.{name}.app:create_app", "--factory",
             "--host", env.get("KT_HOST", "127.0.0.1"), "--port", str(port),
             "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "10"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env,
        )
        threading.Thread(target=_relay_output, args=(name, process), daemon=True).start()
        return process

    children = {name: start(name, port) for name, port in services}
    for name, port in services:
        _wait_for_port(port, timeout=30)
    typer.echo("")
    for name, port in services:
        typer.echo(f"  {name:<11} http://127.0.0.1:{port}    API docs: http://127.0.0.1:{port}/docs")
    typer.echo("\n  a token:   .venv/bin/kent-together token --role call-centre")
    typer.echo("  Ctrl-C stops everything.\n")
    sys.stdout.flush()

    stopping = threading.Event()
    # Handled explicitly: a shell that starts us in the background ignores SIGINT,
    # and Python then never turns Ctrl-C into KeyboardInterrupt.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    ports = dict(services)
    try:
        while not stopping.is_set():
            for name, process in list(children.items()):
                if process.poll() is not None and not stopping.is_set():
                    typer.echo(f"{name} exited with {process.returncode}; starting it again", err=True)
                    children[name] = start(name, ports[name])
            stopping.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        typer.echo("stopping…")
        for process in children.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 15
        for process in children.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
        if broker:
            broker.stop()
        typer.echo("stopped.")


@app.command("anonymise-expired")
def anonymise_expired():
    """Anonymise the referrals past their retention period now (the referrals service also does it hourly)."""
    from datetime import timedelta

    from services.referrals import service
    from services.referrals.models import tables
    from shared.app import build_runtime

    settings = service_settings("referrals")
    runtime = build_runtime(settings, tables)

    async def main() -> list[str]:
        retention = service.RetentionScheduler(
            uow_factory=runtime.uow, topics=settings.topics, poll_seconds=0, audit=runtime.audit,
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


@app.command()
def docs(out: Annotated[Path, typer.Option(help="Where to write")] = Path("docs")):
    """Write the AsyncAPI document and each service's OpenAPI document into docs/."""
    from shared.asyncapi import render

    (out / "openapi").mkdir(parents=True, exist_ok=True)
    (out / "asyncapi.json").write_text(render())
    for name, _ in installed_services():
        module = importlib.import_module(f"services.{name}.app")
        settings = service_settings(name).model_copy(update={"jwt_signing_key": "docs", "log_json": False})
        document = module.create_app(settings).openapi()
        (out / "openapi" / f"{name}.json").write_text(json.dumps(document, indent=2) + "\n")
    typer.echo(f"wrote {out}/asyncapi.json and {out}/openapi/")


async def _create_topics(bootstrap: str) -> None:
    from shared.bus import ensure_topics
    from shared.settings import Topics

    await ensure_topics(bootstrap, {name: 6 for name in Topics().declared()})


def _relay_output(name: str, process: subprocess.Popen) -> None:
    for line in process.stdout:
        sys.stdout.write(f"{name:<11}| {line}")
        sys.stdout.flush()


def _wait_for_port(port: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.1)


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@app.command("import-actions")
def import_actions(
    file: Annotated[Path, typer.Argument(help="The plan's tab-separated text, or the export's .csv or .xlsx",
                                         exists=True, dir_okay=False, readable=True)],
    plan: Annotated[str, typer.Option(help="The plan's slug")] = "krf-recovery-2020",
    starts_on: Annotated[Optional[str], typer.Option(help="The plan's start (YYYY-MM-DD): due dates count from it")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change, and change nothing")] = False,
):
    """Import a recovery plan's actions into the actions service, with a per-row report.

    The same use case as POST /v1/plans/{plan}/import: actions are created or
    updated by (cell, number) in one transaction; tracking is never overwritten;
    a file with any rejected row changes nothing. Events wait in the outbox for
    the service's relay.
    """
    from datetime import date

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from services.actions import service as actions_service
    from services.actions.models import tables as actions_tables
    from shared.app import build_runtime
    from shared.auth import ROLE_SCOPES, Principal
    from shared.db import upgrade
    from shared.errors import ValidationFailed

    console = Console(stderr=True)
    try:
        start = date.fromisoformat(starts_on) if starts_on else None
    except ValueError:
        console.print(f"[red]error:[/] --starts-on {starts_on!r} is not a date (YYYY-MM-DD)")
        raise typer.Exit(2)
    settings = service_settings("actions")
    upgrade("actions", settings.database_url)
    runtime = build_runtime(settings, actions_tables)
    operator = Principal(subject=f"cli:{_operator()}", role="admin", scopes=ROLE_SCOPES["admin"])

    async def main(progress: Progress, task) -> dict:
        try:
            return await actions_service.import_plan(
                runtime.uow(), plan=plan,
                upload=actions_service.PlanUpload(filename=file.name, content=file.read_bytes()),
                by=operator, topics=settings.topics, starts_on=start, dry_run=dry_run,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
            )
        finally:
            await runtime.producer.stop()
            await runtime.db.dispose()

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"importing {file.name}", total=None)
        try:
            report = asyncio.run(main(progress, task))
        except ValidationFailed as error:
            report = error.extensions.get("report")
            for problem in error.extensions.get("errors", []):
                console.print(f"[red]rejected[/] {problem['field']}: {problem['reason']}")
            if report is None:
                raise typer.Exit(1)
            _print_import_report(console, report)
            console.print("[red]nothing was changed[/]")
            raise typer.Exit(1)
    _print_import_report(console, report)


def _print_import_report(console, report: dict) -> None:
    counts = report["counts"]
    updated = [row for row in report["rows"] if row["outcome"] == "updated"]
    for row in updated[:20]:
        console.print(f"updated row {row['row']}: {row['cell']} {row['number']} ({', '.join(row['changed'])})")
    if len(updated) > 20:
        console.print(f"… and {len(updated) - 20} more updated")
    for reference in report["links"]["unresolved"]:
        console.print(f"[yellow]unresolved cross reference[/] {reference}")
    state = "dry run, nothing changed" if report["dry_run"] else ("applied" if report["applied"] else "not applied")
    console.print(
        f"{report['plan']}: {counts['created']} created, {counts['updated']} updated, "
        f"{counts['unchanged']} unchanged, {counts['rejected']} rejected ({state})"
    )
    console.print(f"links from the plan's cross references: {report['links']['created']} added, "
                  f"{report['links']['removed']} removed")


def _operator() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name in a bare container: the command still runs
        return "unknown"


if __name__ == "__main__":
    app()
