"""`kent-together`: the platform's command line (installed into .venv by `make run`)."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
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
from shared.apache_kafka import KafkaCluster
from shared.bus import EmbeddedBroker, port_open
from shared.settings import ServiceSettings

app = typer.Typer(help="Kent Together platform commands.", no_args_is_help=True, add_completion=False)

# Every service of the suite, in start order: (name, port).
SERVICES = (("referrals", 8001), ("fulfilment", 8002), ("actions", 8003), ("reporting", 8004))
# The web front: pages over the services' public APIs, no API of its own; started after them.
WEB = ("web", 8005)
# What `make run` tells each person to open, on the web front.
WEB_PAGES = (("residents", "/get-help"), ("advisers", "/adviser"), ("hubs", "/hub"), ("recovery leads", "/actions"),
             ("dashboard", "/dashboard"))


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


def web_installed() -> bool:
    try:
        importlib.import_module("services.web.app")
    except ModuleNotFoundError:
        return False
    return True


def runnable() -> list[tuple[str, int]]:
    """What `run` starts and `migrate` migrates: the services, then the web front."""
    return installed_services() + ([WEB] if web_installed() else [])


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
    from services.fulfilment.hubs import KENT_HUBS

    slugs = [h.slug for h in KENT_HUBS]
    if hub is not None and hub not in slugs:
        typer.echo(f"error: there is no hub {hub!r}; the hubs are {', '.join(slugs)}", err=True)
        raise typer.Exit(2)
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
def keygen(
    key_id: Annotated[str, typer.Option("--id", help="The new data key's id (e.g. the month: 2026-01)")],
):
    """Print new production keys: a data key `id:base64` (put it first in KT_DATA_KEYS) and a KT_BLIND_INDEX_KEY."""
    from shared.crypto import DEV_KEY_PREFIX, new_key, parse_data_keys

    line = f"{key_id}:{new_key()}"
    try:
        parse_data_keys(line)
        if key_id.startswith(DEV_KEY_PREFIX):
            raise ValueError(f"ids starting with {DEV_KEY_PREFIX!r} mark development keys: production refuses them")
    except Exception as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2)
    typer.echo(f"KT_DATA_KEYS entry:  {line}")
    typer.echo(f"KT_BLIND_INDEX_KEY:  {new_key()}   (only for a new installation: see docs/security.md)")


@app.command()
def migrate(service: Annotated[Optional[str], typer.Argument(help="One service; all if omitted")] = None):
    """Apply Alembic migrations to each service's database."""
    from shared.db import upgrade

    for name, _ in runnable():
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
    kind: Annotated[str, typer.Option("--broker", envvar="KT_BROKER",
                                      help="tansu (embedded, in memory) or kafka (Apache Kafka, data kept under var/)")] = "tansu",
):
    """Start the suite: a broker (unless KAFKA_BOOTSTRAP_SERVERS is set), migrations, services.

    The broker is tansu, in memory, by default; `KT_BROKER=kafka` starts Apache
    Kafka instead (one node, its data under var/kafka; `make kafka` fetches it).

    A service that dies is started again; Ctrl-C stops everything.
    """
    services = [(n, p + port_offset) for n, p in runnable() if not only or n in only]
    var_dir = ServiceSettings().var_dir
    var_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, KT_PORT_OFFSET=str(port_offset))  # the web front finds the services by it
    broker: EmbeddedBroker | KafkaCluster | None = None
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        if port_open("127.0.0.1", broker_port):
            typer.echo(f"port {broker_port} is in use: using the broker already there")
        elif kind == "kafka":
            typer.echo(f"starting Apache Kafka (one KRaft node, data kept in {var_dir}/kafka) on 127.0.0.1:{broker_port} …")
            broker = KafkaCluster(var_dir / "kafka", nodes=1, base_port=broker_port).start()
            typer.echo(f"Apache Kafka on 127.0.0.1:{broker_port}; log in {var_dir}/kafka/node-1/server.log")
        else:
            broker = EmbeddedBroker(port=broker_port, log_path=var_dir / "broker.log").start()
            typer.echo(f"embedded Kafka-protocol broker (tansu, in memory) on 127.0.0.1:{broker_port}; log in {var_dir}/broker.log")
        env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{broker_port}"
        if kind != "kafka":
            env.setdefault("KAFKA_IDEMPOTENT_PRODUCER", "false")  # tansu refuses InitProducerId
    asyncio.run(_create_topics(env["KAFKA_BOOTSTRAP_SERVERS"], security=ServiceSettings().kafka))
    # One process migrates them all: starting Python is most of what a migration takes.
    for name in [None] if not only else [name for name, _ in services]:
        subprocess.run([sys.executable, "-m", "shared.cli", "migrate"] + ([name] if name else []), check=True, env=env)

    def start(name: str, port: int) -> subprocess.Popen:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", f"services.{name}.app:create_app", "--factory",
             "--host", env.get("KT_HOST", "127.0.0.1"), "--port", str(port),
             "--no-access-log", "--no-proxy-headers", "--log-level", "warning", "--timeout-graceful-shutdown", "10"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, env=env,
            preexec_fn=_own_process_group,
        )
        threading.Thread(target=_relay_output, args=(name, process), daemon=True).start()
        return process

    children = {name: start(name, port) for name, port in services}
    for name, port in services:
        _wait_for_port(port, timeout=30)
    typer.echo("")
    for name, port in services:
        if name == WEB[0]:
            continue
        typer.echo(f"  {name:<11} http://127.0.0.1:{port}    API docs: http://127.0.0.1:{port}/docs")
    web_port = dict(services).get(WEB[0])
    if web_port:
        typer.echo(f"\n  web front   http://127.0.0.1:{web_port}   (development sign-in: pick a role and a hub)")
        for person, path in WEB_PAGES:
            typer.echo(f"    {person + ':':<16}http://127.0.0.1:{web_port}{path}")
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
                process.send_signal(signal.SIGTERM)  # one signal each: uvicorn's graceful stop
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


def personal_services() -> list[str]:
    """The installed services that hold residents' personal data, sealed at rest."""
    return [name for name, _ in runnable()
            if importlib.import_module(f"services.{name}.models").tables.personal]


@app.command()
def rekey(
    service: Annotated[Optional[str], typer.Argument(help="referrals, fulfilment or web; all if omitted")] = None,
    batch: Annotated[int, typer.Option(help="Rows per transaction", min=1)] = 500,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Count what would change, and change nothing")] = False,
):
    """Finish a key rotation: seal every value again with the first key of KT_DATA_KEYS, and make every blind index
    again with KT_BLIND_INDEX_KEY.

    Safe while the service runs and takes referrals (a commit per batch; a row changed
    meanwhile is read again, never overwritten). Run it with the keys the services run
    with. At the end it prints which data keys still seal something: when it is only
    the first, the others can be removed from KT_DATA_KEYS, and KT_BLIND_INDEX_KEY_PREVIOUS
    can go (docs/security.md, "Rotating keys").
    """
    from shared import rekey as r
    from shared.db import Database

    names = personal_services()
    if service is not None and service not in names:
        typer.echo(f"error: {service!r} holds no sealed data; one of: {', '.join(names)}", err=True)
        raise typer.Exit(2)
    finished = True
    for name in [service] if service else names:
        settings = service_settings(name)
        keyring = settings.keyring()
        tables = importlib.import_module(f"services.{name}.models").tables
        service_module = f"services.{name}.service"  # the web front has none: its sessions have no blind indexes
        derived = getattr(importlib.import_module(service_module), "REKEY_INDEXES", ()) \
            if importlib.util.find_spec(service_module) else ()
        previous = "set (lookups match either key)" if keyring.has_previous_index_key else "not set"
        typer.echo(f"{name}: {_safe_url(settings.database_url)}{'  (dry run: nothing is changed)' if dry_run else ''}")
        typer.echo(f"  sealing with data key {keyring.sealing_key_id!r} (KT_DATA_KEYS holds {', '.join(keyring.key_ids)}); "
                   f"KT_BLIND_INDEX_KEY_PREVIOUS {previous}")
        typer.echo(f"  {'table':<20} {'examined':>9} {'re-sealed':>10} {'indexes':>8} {'changed meanwhile':>18} "
                   f"{'left':>5} {'unreadable':>10}")

        def show(report: r.TableReport) -> None:
            typer.echo(f"  {report.table:<20} {report.examined:>9} {report.resealed:>10} {report.reindexed:>8} "
                       f"{report.changed_meanwhile:>18} {report.left:>5} {report.unreadable:>10}")

        async def main() -> r.Census:
            db = Database(settings.database_url)
            try:
                await r.rekey(db, tables.metadata, keyring, derived=derived, batch=batch, dry_run=dry_run,
                              progress=show)
                return await r.census(db, tables.metadata, keyring, derived=derived)
            finally:
                await db.dispose()

        found = asyncio.run(main())
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
            typer.echo(f"  done: only {keyring.sealing_key_id!r} seals data in {name}"
                       + (f"; {', '.join(removable)} no longer needed here" if removable else "")
                       + ("; KT_BLIND_INDEX_KEY_PREVIOUS no longer needed here" if keyring.has_previous_index_key else ""))
        else:
            finished = False
            typer.echo(f"  not finished: keep every key until a run ends with only {keyring.sealing_key_id!r}")
    if not finished and not dry_run:
        raise typer.Exit(1)


@app.command()
def docs(out: Annotated[Path, typer.Option(help="Where to write")] = Path("docs")):
    """Write the AsyncAPI document and each service's OpenAPI document into docs/."""
    from shared.asyncapi import render

    (out / "openapi").mkdir(parents=True, exist_ok=True)
    (out / "asyncapi.json").write_text(render())
    for name, text in openapi_documents().items():
        (out / "openapi" / f"{name}.json").write_text(text)
    typer.echo(f"wrote {out}/asyncapi.json and {out}/openapi/")


def openapi_documents() -> dict[str, str]:
    """Each installed service's OpenAPI document as `docs/openapi/<service>.json` holds it."""
    documents = {}
    for name, _ in installed_services():
        module = importlib.import_module(f"services.{name}.app")
        settings = service_settings(name).model_copy(update={"jwt_signing_key": "docs", "log_json": False})
        documents[name] = json.dumps(module.create_app(settings).openapi(), indent=2) + "\n"
    return documents


def _topic_plan():
    from services.fulfilment.hubs import KENT_HUBS
    from shared.topic_plan import topic_plan

    return topic_plan([hub.slug for hub in KENT_HUBS])


async def _create_topics(bootstrap: str, *, security) -> list[str]:
    from shared.topic_plan import create_topics

    return await create_topics(bootstrap, _topic_plan(), security=security)


@app.command("create-topics")
def create_topics_command(
    check: Annotated[bool, typer.Option("--check", help="Only say how the cluster differs from the plan")] = False,
):
    """Create every topic of shared/topic_plan.py that is missing, then check the cluster against the plan.

    Exits 1 when a topic differs (partitions, replicas, retention, min.insync.replicas).
    """
    from shared.topic_plan import check_topics

    settings = ServiceSettings()
    bootstrap, security = settings.kafka_bootstrap_servers, settings.kafka
    if not check:
        created = asyncio.run(_create_topics(bootstrap, security=security))
        typer.echo(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))
    differences = asyncio.run(check_topics(bootstrap, _topic_plan(), security=security))
    for difference in differences:
        typer.echo(f"  differs: {difference}", err=True)
    typer.echo(f"{len(_topic_plan())} topics checked against the plan, {len(differences)} differences")
    if differences:
        raise typer.Exit(1)


@app.command("topics-manifest")
def topics_manifest(out: Annotated[Path, typer.Option(help="Where to write")] = Path("deploy/k8s/base/kafka-topics.yaml")):
    """Write Strimzi's KafkaTopic resources from the topic plan."""
    from shared.topic_plan import strimzi_manifest

    out.write_text(strimzi_manifest(_topic_plan()))
    typer.echo(f"wrote {out}")


def _libc():
    """libc, loaded in the supervisor (a child between fork and exec must not import anything)."""
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None  # not glibc Linux: Ctrl-C still stops everything through the supervisor


_LIBC = _libc() if sys.platform.startswith("linux") else None


def _own_process_group() -> None:
    """In a service's process before it starts: out of the terminal's process group, tied to the supervisor.

    A terminal's Ctrl-C goes to its whole foreground group: a service there would get
    it and then the supervisor's own stop, and uvicorn takes a second signal as "quit
    now", cancelling its shutdown with a traceback. Out of the group, each service
    hears one stop, from the supervisor; and it is stopped if the supervisor dies.
    """
    os.setpgrp()
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


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


@app.command()
def replay(
    force: Annotated[bool, typer.Option("--force", help="Rebuild even if the topics hold less than the figures")] = False,
):
    """Rebuild reporting's figures from its topics, from their beginnings; refused if that would lose figures.

    Refused, changing nothing, when a topic no longer starts at its first event or
    when the topics rebuild fewer requests, referrals or actions than reporting holds
    (an embedded broker restarted empty): republish first (`kent-together republish`).
    The rebuild is one transaction: the old figures stay until it commits. Safe beside
    a running reporting service, whose consumer waits for it.
    """
    from services.reporting.app import consumed_topics
    from services.reporting.models import tables as reporting_tables
    from services.reporting.service import ReplayRefused
    from services.reporting.service import replay as replay_topics
    from shared.app import build_runtime
    from shared.db import upgrade

    settings = service_settings("reporting")
    upgrade("reporting", settings.database_url)
    runtime = build_runtime(settings, reporting_tables)

    async def main() -> int:
        try:
            return await replay_topics(
                runtime.uow, inbox=reporting_tables.inbox, consumer=settings.consumer_group,
                bootstrap_servers=settings.kafka_bootstrap_servers, topics=consumed_topics(settings),
                security=settings.kafka, force=force,
            )
        finally:
            await runtime.producer.stop()
            await runtime.db.dispose()

    try:
        count = asyncio.run(main())
    except ReplayRefused as refused:
        typer.echo(f"replay refused: {refused}", err=True)
        raise typer.Exit(1)
    typer.echo(f"replayed {count} events into reporting: {_safe_url(settings.database_url)}")


def _state_pages():
    """Each producing service's `publish_state_page` (see shared/outbox.py `republish_state`)."""
    from services.actions import service as actions
    from services.fulfilment import service as fulfilment
    from services.referrals import service as referrals

    return {"referrals": referrals.publish_state_page, "fulfilment": fulfilment.publish_state_page,
            "actions": actions.publish_state_page}


@app.command()
def republish(
    service: Annotated[str, typer.Argument(help="referrals, fulfilment or actions")],
    since: Annotated[Optional[str], typer.Option(help="Send the outbox rows kept from this time (ISO 8601) again, "
                                                      "instead of the current state")] = None,
    until: Annotated[Optional[str], typer.Option(help="With --since: up to this time (default now)")] = None,
):
    """Publish a service's events again so reporting can be rebuilt (`kent-together replay`).

    By default the current state: every request (referrals), assignment (fulfilment) or
    action (actions) as it is now, as new events that read models fold idempotently.
    With --since: the published outbox rows kept for that range (see
    <SERVICE>_OUTBOX_RETENTION_DAYS), sent again as they were. The service's relay
    sends them; start the suite if it is not running.
    """
    from datetime import datetime, timezone

    from shared.app import build_runtime
    from shared.db import upgrade, utcnow
    from shared.outbox import republish as republish_range
    from shared.outbox import republish_state

    pages = _state_pages()
    if service not in pages:
        typer.echo(f"error: {service!r} publishes nothing to republish; one of: {', '.join(pages)}", err=True)
        raise typer.Exit(2)

    def when(text: str, option: str) -> datetime:
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            typer.echo(f"error: {option} {text!r} is not a time (ISO 8601, e.g. 2026-12-01T09:00)", err=True)
            raise typer.Exit(2)
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)

    window = (when(since, "--since"), when(until, "--until") if until else utcnow()) if since else None
    settings = service_settings(service)
    upgrade(service, settings.database_url)
    tables = importlib.import_module(f"services.{service}.models").tables
    runtime = build_runtime(settings, tables)
    page = pages[service]

    async def main() -> int:
        try:
            if window:
                return await republish_range(db=runtime.db, table=tables.outbox, since=window[0], until=window[1])
            return await republish_state(runtime.uow, page=lambda uow, after, limit: page(
                uow, after, limit, topics=settings.topics))
        finally:
            await runtime.producer.stop()
            await runtime.db.dispose()

    count = asyncio.run(main())
    what = "outbox rows marked to send again" if window else "records' current state published to the outbox"
    typer.echo(f"{service}: {count:,} {what}; the service's relay sends them")


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


@app.command()
def demo(
    preset: Annotated[Optional[str], typer.Option(help="april-2020: the briefing's 2,893 referrals, 4,293 requests, 1–25 April 2020")] = None,
    referrals: Annotated[Optional[int], typer.Option(help="How many referrals (default 100, or the preset's)")] = None,
    requests: Annotated[Optional[int], typer.Option(help="How many requests they carry (default about 1.48 a referral)")] = None,
    from_: Annotated[Optional[str], typer.Option("--from", help="First day, YYYY-MM-DD (default a week ago)")] = None,
    to: Annotated[Optional[str], typer.Option(help="Last day, YYYY-MM-DD (default today)")] = None,
    mix: Annotated[Optional[str], typer.Option(help="Request types: food=55,prescription=27,befriending=8,…")] = None,
    channels: Annotated[Optional[str], typer.Option(help="Channels: phone=50,online=40,partner=8,email=2")] = None,
    districts: Annotated[Optional[str], typer.Option(help="Hubs, weighted (thanet=2,dover=1) or listed (thanet,dover); default by population")] = None,
    out_of_area: Annotated[float, typer.Option(help="Share of referrals at Medway postcodes (out-of-area queue)")] = 0.0,
    unknown_postcodes: Annotated[float, typer.Option(help="Share at postcodes in no directory (triage)")] = 0.0,
    hub_activity: Annotated[Optional[str], typer.Option(help="What hubs do, as shares of their requests: fulfilled=0.62,unable=0.07,rejected=0.03,in_progress=0.08,accepted=0.06 (the rest stays routed)")] = None,
    seed: Annotated[int, typer.Option(help="The same seed and options make the same load")] = 2020,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once")] = 8,
    referrals_url: Annotated[Optional[str], typer.Option(help="Default http://127.0.0.1:8001 (+KT_PORT_OFFSET)")] = None,
    fulfilment_url: Annotated[Optional[str], typer.Option(help="Default http://127.0.0.1:8002 (+KT_PORT_OFFSET)")] = None,
    token_file: Annotated[Optional[Path], typer.Option(help="Tokens from your identity provider: a file holding one administrator token, or JSON {\"backfill\": …, \"hubs\": {slug: …}}; else $KT_DEMO_TOKEN; else development tokens are minted")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for fulfilment to route every request")] = 300.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan's figures and post nothing")] = False,
):
    """Generate a realistic demo load through the public HTTP APIs (referrals, then hub activity).

    Referrals are dated with received_at and hub transitions with at, so the
    figures land on the plan's days: that needs the backfill scopes of an
    administrator's token. Every POST carries an Idempotency-Key made from the
    plan, so a rerun after an interruption carries on without duplicates.
    """
    from shared import demo as d

    console = _console()
    try:
        spec = _demo_spec(
            d, preset=preset, referrals=referrals, requests=requests, start=from_, end=to, mix=mix, channels=channels,
            districts=districts, out_of_area=out_of_area, unknown=unknown_postcodes, activity=hub_activity, seed=seed,
        )
        from services.fulfilment.postcodes import PostcodeDirectory

        plan = d.make_plan(spec, d.demo_postcodes(PostcodeDirectory.load()))
    except ValueError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2)
    _print_plan(console, d, plan)
    if dry_run:
        return
    try:
        tokens = _demo_tokens(d, token_file)
    except (ValueError, RuntimeError, OSError) as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2)
    offset = int(os.environ.get("KT_PORT_OFFSET", "0") or 0)
    referrals_url = referrals_url or f"http://127.0.0.1:{8001 + offset}"
    fulfilment_url = fulfilment_url or f"http://127.0.0.1:{8002 + offset}"

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from shared.http_client import polite_client

    async def main(progress: Progress) -> "d.Report":
        tasks = {}

        def show(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        # Both honour the services' rate limits (429 and Retry-After): a demo is one client among many.
        async with polite_client(referrals_url, max_connections=concurrency * 2) as r_client, \
                polite_client(fulfilment_url, max_connections=concurrency * 2) as f_client:
            report = await d.run_demo(plan, referrals=r_client, fulfilment=f_client, tokens=tokens,
                                      concurrency=concurrency, wait_seconds=wait, progress=show)
            report.waited_out = r_client._transport.retried + f_client._transport.retried
            return report

    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        report = asyncio.run(main(progress))
    _print_demo_report(console, d, plan, report)
    if report.failures:
        raise typer.Exit(1)


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _demo_spec(d, *, preset, referrals, requests, start, end, mix, channels, districts, out_of_area, unknown,
               activity, seed):
    from datetime import date, timedelta

    if preset is not None and preset not in d.PRESETS:
        raise ValueError(f"--preset {preset!r} is unknown; one of {', '.join(d.PRESETS)}")
    base = d.PRESETS[preset](seed=seed) if preset else None

    def day(text, option, default):
        if text is None:
            return default
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{option} {text!r} is not a date (YYYY-MM-DD)") from None

    today = date.today()
    count = referrals if referrals is not None else (base.referrals if base else 100)
    if requests is None:
        # The briefing's 4,293 requests for 2,893 referrals, when only --referrals is given.
        requests = base.requests if base and referrals is None else round(count * 4293 / 2893)
    return d.LoadSpec(
        referrals=count, requests=requests,
        start=day(start, "--from", base.start if base else today - timedelta(days=6)),
        end=day(end, "--to", base.end if base else today),
        mix=d.parse_shares(mix, option="--mix") if mix else (base.mix if base else d.APRIL_2020_MIX),
        channels=d.parse_shares(channels, option="--channels") if channels else (
            base.channels if base else {"phone": 0.5, "online": 0.4, "partner": 0.08, "email": 0.02}),
        districts=d.parse_shares(districts, option="--districts") if districts else d.DISTRICT_POPULATION,
        out_of_area=out_of_area, unknown=unknown,
        activity=d.parse_shares(activity, option="--hub-activity") if activity else dict(d.DEFAULT_ACTIVITY),
        seed=seed,
    )


def _demo_tokens(d, token_file: Optional[Path]):
    """From the file, else $KT_DEMO_TOKEN, else minted from the development key (as `kent-together token`)."""
    text = token_file.read_text().strip() if token_file else os.environ.get("KT_DEMO_TOKEN", "").strip()
    if text:
        if text.startswith("{"):
            values = json.loads(text)
            if not isinstance(values, dict) or not values.get("backfill"):
                raise ValueError('a JSON token file needs "backfill": an administrator\'s token')
            return d.Tokens(backfill=values["backfill"], hubs=values.get("hubs") or {})
        return d.Tokens(backfill=text)
    settings = ServiceSettings()

    def mint(role, hub=None, subject=None):
        return mint_token(signing_key=settings.signing_key(), role=role, hub=hub, subject=subject,
                          issuer=settings.jwt_issuer, audience=settings.jwt_audience, ttl_seconds=6 * 3600)

    # A fixed subject: Idempotency-Keys are per caller, so a rerun must be the same caller.
    return d.Tokens(backfill=mint("admin", subject="kent-together-demo"),
                    hubs={slug: mint("hub", hub=slug, subject=f"demo-{slug}-hub") for slug in d.HUBS})


def _shares_table(title: str, counts, *, total: int | None = None):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    total = total if total is not None else sum(counts.values())
    for key, count in counts.most_common():
        table.add_row(str(key), f"{count:,}", f"{count / total:.1%}" if total else "-")
    return table


def _print_plan(console, d, plan) -> None:
    spec = plan.spec
    days = plan.referrals_by_day()
    console.print(
        f"plan: {len(plan.referrals):,} referrals carrying {len(plan.requests):,} requests, "
        f"{spec.start} to {spec.end} ({len(days)} days, busiest {max(days.values())} a day), seed {spec.seed}"
    )
    console.print(_shares_table("requests by type (planned)", plan.requests_by_type()))


def _print_demo_report(console, d, plan, report) -> None:
    from rich.table import Table

    console.print(f"referrals posted: {report.posted:,} of {len(plan.referrals):,} (201; "
                  f"{report.replayed:,} of them replays of an earlier run), requests: {report.requests:,}")
    console.print(_shares_table("requests by type", report.by_type))
    console.print(_shares_table("referrals by place", report.by_place))
    console.print(_shares_table("referrals by channel", report.by_channel))
    table = Table(title="hub activity", title_justify="left")
    for column in ("assignments found", "transitions made", "already done (rerun)", "missing"):
        table.add_column(column, justify="right")
    table.add_row(f"{sum(report.assignments_found.values()):,}",
                  ", ".join(f"{k} {v:,}" for k, v in report.transitions.most_common()) or "0",
                  f"{report.already_done:,}", f"{sum(report.assignments_missing.values()):,}")
    console.print(table)
    console.print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
    if report.waited_out:
        console.print(f"waited out {report.waited_out:,} answers to slow down (429 or 503 with Retry-After)")
    if report.failures:
        console.print(f"[red]{len(report.failures)} failures[/] (a rerun with the same options carries on):")
        for failure in report.failures[:30]:
            console.print(f"  {failure.what}: {failure.status or 'no answer'} {failure.detail}")
        if len(report.failures) > 30:
            console.print(f"  … and {len(report.failures) - 30} more")
    else:
        console.print("[green]no failures[/]")


def _operator() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name in a bare container: the command still runs
        return "unknown"


@app.command("replay-dead-letters")
def replay_dead_letters_command(
    group: Annotated[str, typer.Argument(help="The consumer group whose dead letters to replay, e.g. fulfilment")],
    event_id: Annotated[Optional[list[str]], typer.Option("--event-id", help="Only these events (repeatable)")] = None,
):
    """Send the messages parked on kt.dlq.GROUP back to the topics they came from (after fixing the cause)."""
    from shared.bus import Producer
    from shared.deadletters import replay_dead_letters
    from shared.settings import Topics

    from shared.kafka_security import check_transport

    settings = ServiceSettings()
    check_transport(settings.kafka, settings.environment)
    producer = Producer(settings.kafka_bootstrap_servers, security=settings.kafka,
                        idempotent=settings.kafka_idempotent_producer)

    async def main() -> int:
        try:
            return await replay_dead_letters(
                bootstrap_servers=settings.kafka_bootstrap_servers, producer=producer,
                dead_letter_topic=Topics().dead_letter_prefix + group, event_ids=set(event_id) if event_id else None,
                security=settings.kafka,
            )
        finally:
            await producer.stop()

    typer.echo(f"replayed {asyncio.run(main())} dead letters of {group}")


if __name__ == "__main__":
    app()
