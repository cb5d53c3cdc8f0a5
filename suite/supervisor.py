"""Running the suite: `run` (broker, topics, migrations, every service, restarted if it dies), `migrate`, `relay`,
and the topic plan on a cluster (`create-topics`, `topics-manifest`)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from shared.bus import EmbeddedBroker, port_open
from shared.settings import ServiceSettings
from suite import registry
from suite.common import safe_url

if TYPE_CHECKING:
    from shared.apache_kafka import KafkaCluster
    from shared.kafka_security import KafkaSecurity
    from shared.topic_plan import TopicSpec

WEB_PAGES = (
    ("residents", "/get-help"),
    ("advisers", "/adviser"),
    ("hubs", "/hub"),
    ("recovery leads", "/actions"),
    ("dashboard", "/dashboard"),
)
"""What `make run` tells each person to open, on the web front."""


def migrate(
    services: Annotated[list[str] | None, typer.Argument(help="One service or more; all if omitted")] = None,
) -> None:
    """Apply Alembic migrations to each service's database."""
    from shared.db import upgrade

    unknown = sorted(set(services or ()) - set(registry.names()))
    if unknown:
        typer.echo(f"error: no service {', '.join(unknown)}; one of {', '.join(registry.names())}", err=True)
        raise typer.Exit(2)
    for spec in registry.RUNNABLE:
        if services and spec.name not in services:
            continue
        settings = spec.settings()
        upgrade(spec.migrations, settings.database_url)
        typer.echo(f"migrated {spec.name}: {safe_url(settings.database_url)}")


def relay(service: Annotated[str, typer.Argument(help="The service whose outbox to publish")]) -> None:
    """Run an outbox relay on its own (scale out: several are safe on PostgreSQL)."""
    from shared.app import build_runtime

    spec = registry.spec(service)
    if spec.tables is None:
        typer.echo(f"error: {service!r} has no outbox", err=True)
        raise typer.Exit(2)
    runtime = build_runtime(spec.settings(), spec.tables)

    async def main() -> None:
        try:
            await runtime.relay.run()
        finally:
            await runtime.producer.stop()
            await runtime.db.dispose()

    asyncio.run(main())


def run(
    only: Annotated[list[str] | None, typer.Option("--only", help="Start only these services")] = None,
    port_offset: Annotated[int, typer.Option(envvar="KT_PORT_OFFSET", help="Add to every service port")] = 0,
    broker_port: Annotated[int, typer.Option(envvar="KT_BROKER_PORT", help="Embedded broker port")] = 9092,
    kind: Annotated[
        str,
        typer.Option(
            "--broker",
            envvar="KT_BROKER",
            help="tansu (embedded, in memory) or kafka (Apache Kafka, data kept under var/)",
        ),
    ] = "tansu",
) -> None:
    """Start the suite: a broker (unless KAFKA_BOOTSTRAP_SERVERS is set), migrations, services.

    The broker is tansu, in memory, by default; `KT_BROKER=kafka` starts Apache
    Kafka instead (one node, its data under var/kafka; `make kafka` fetches it).

    A service that dies is started again; Ctrl-C stops everything.
    """
    specs = [spec for spec in registry.RUNNABLE if not only or spec.name in only]
    ports = {spec.name: spec.port + port_offset for spec in specs}
    var_dir = ServiceSettings().var_dir
    var_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, KT_PORT_OFFSET=str(port_offset))  # the web front finds the services by it
    broker = None if env.get("KAFKA_BOOTSTRAP_SERVERS") else _start_broker(kind, broker_port, var_dir)
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        env["KAFKA_BOOTSTRAP_SERVERS"] = f"127.0.0.1:{broker_port}"
        if kind != "kafka":
            env.setdefault("KAFKA_IDEMPOTENT_PRODUCER", "false")  # tansu refuses InitProducerId
    asyncio.run(create_planned_topics(env["KAFKA_BOOTSTRAP_SERVERS"], security=ServiceSettings().kafka))
    # One process for them all: what costs is starting Python and importing the services, not the migrations.
    subprocess.run([sys.executable, "-m", "suite.cli", "migrate", *(spec.name for spec in specs)], check=True, env=env)

    def start(name: str) -> subprocess.Popen[str]:
        factory = registry.spec(name).create_app
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                f"{factory.__module__}:{factory.__name__}",
                "--factory",
                "--host",
                env.get("KT_HOST", "127.0.0.1"),
                "--port",
                str(ports[name]),
                "--no-access-log",
                "--no-proxy-headers",
                "--log-level",
                "warning",
                "--timeout-graceful-shutdown",
                "10",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            env=env,
            preexec_fn=_own_process_group,
        )
        threading.Thread(target=_relay_output, args=(name, process), daemon=True).start()
        return process

    children = {name: start(name) for name in ports}
    for port in ports.values():
        _wait_for_port(port, timeout=30)
    _print_addresses(ports)

    stopping = threading.Event()
    # Handled explicitly: a shell that starts us in the background ignores SIGINT,
    # and Python then never turns Ctrl-C into KeyboardInterrupt.
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        while not stopping.is_set():
            for name, process in list(children.items()):
                if process.poll() is not None and not stopping.is_set():
                    typer.echo(f"{name} exited with {process.returncode}; starting it again", err=True)
                    children[name] = start(name)
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


def _start_broker(kind: str, port: int, var_dir: Path) -> EmbeddedBroker | KafkaCluster | None:
    if port_open("127.0.0.1", port):
        typer.echo(f"port {port} is in use: using the broker already there")
        return None
    if kind == "kafka":
        from shared.apache_kafka import KafkaCluster

        typer.echo(f"starting Apache Kafka (one KRaft node, data kept in {var_dir}/kafka) on 127.0.0.1:{port} …")
        cluster = KafkaCluster(var_dir / "kafka", nodes=1, base_port=port).start()
        typer.echo(f"Apache Kafka on 127.0.0.1:{port}; log in {var_dir}/kafka/node-1/server.log")
        return cluster
    broker = EmbeddedBroker(port=port, log_path=var_dir / "broker.log").start()
    typer.echo(f"embedded Kafka-protocol broker (tansu, in memory) on 127.0.0.1:{port}; log in {var_dir}/broker.log")
    return broker


def _print_addresses(ports: dict[str, int]) -> None:
    typer.echo("")
    for name, port in ports.items():
        if name == registry.WEB.name:
            continue
        typer.echo(f"  {name:<11} http://127.0.0.1:{port}    API docs: http://127.0.0.1:{port}/docs")
    web_port = ports.get(registry.WEB.name)
    if web_port:
        typer.echo(f"\n  web front   http://127.0.0.1:{web_port}   (development sign-in: pick a role and a hub)")
        for person, path in WEB_PAGES:
            typer.echo(f"    {person + ':':<16}http://127.0.0.1:{web_port}{path}")
    typer.echo("\n  a token:   .venv/bin/kent-together token --role call-centre")
    typer.echo("  Ctrl-C stops everything.\n")
    sys.stdout.flush()


def topic_plan() -> list[TopicSpec]:
    from shared.topic_plan import topic_plan as plan

    return plan(list(registry.HUB_SLUGS))


async def create_planned_topics(bootstrap: str, *, security: KafkaSecurity) -> list[str]:
    from shared.topic_plan import create_topics

    return await create_topics(bootstrap, topic_plan(), security=security)


def create_topics(
    check: Annotated[bool, typer.Option("--check", help="Only say how the cluster differs from the plan")] = False,
) -> None:
    """Create every topic of shared/topic_plan.py that is missing, then check the cluster against the plan.

    Exits 1 when a topic differs (partitions, replicas, retention, min.insync.replicas).
    """
    from shared.topic_plan import check_topics

    settings = ServiceSettings()
    bootstrap, security = settings.kafka_bootstrap_servers, settings.kafka
    if not check:
        created = asyncio.run(create_planned_topics(bootstrap, security=security))
        typer.echo(f"created {len(created)} topics" + (f": {', '.join(created)}" if created else ""))
    differences = asyncio.run(check_topics(bootstrap, topic_plan(), security=security))
    for difference in differences:
        typer.echo(f"  differs: {difference}", err=True)
    typer.echo(f"{len(topic_plan())} topics checked against the plan, {len(differences)} differences")
    if differences:
        raise typer.Exit(1)


def topics_manifest(
    out: Annotated[Path, typer.Option(help="Where to write")] = Path("deploy/k8s/base/kafka-topics.yaml"),
) -> None:
    """Write Strimzi's KafkaTopic resources from the topic plan."""
    from shared.topic_plan import strimzi_manifest

    out.write_text(strimzi_manifest(topic_plan()))
    typer.echo(f"wrote {out}")


def _libc() -> Any:
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


def _relay_output(name: str, process: subprocess.Popen[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        sys.stdout.write(f"{name:<11}| {line}")
        sys.stdout.flush()


def _wait_for_port(port: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.1)
