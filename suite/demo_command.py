"""`demo`: a realistic load through the public HTTP APIs (suite/demo.py makes the plan and drives it), printed."""

from __future__ import annotations

import asyncio
import json
import os
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from suite import demo as d
from suite import registry
from suite.common import console
from suite.keys import development_token

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table


def demo(
    preset: Annotated[
        str | None, typer.Option(help="april-2020: the briefing's 2,893 referrals, 4,293 requests, 1–25 April 2020")
    ] = None,
    referrals: Annotated[int | None, typer.Option(help="How many referrals (default 100, or the preset's)")] = None,
    requests: Annotated[
        int | None, typer.Option(help="How many requests they carry (default about 1.48 a referral)")
    ] = None,
    from_: Annotated[str | None, typer.Option("--from", help="First day, YYYY-MM-DD (default a week ago)")] = None,
    to: Annotated[str | None, typer.Option(help="Last day, YYYY-MM-DD (default today)")] = None,
    mix: Annotated[str | None, typer.Option(help="Request types: food=55,prescription=27,befriending=8,…")] = None,
    channels: Annotated[str | None, typer.Option(help="Channels: phone=50,online=40,partner=8,email=2")] = None,
    districts: Annotated[
        str | None,
        typer.Option(help="Hubs, weighted (thanet=2,dover=1) or listed (thanet,dover); default by population"),
    ] = None,
    out_of_area: Annotated[
        float, typer.Option(help="Share of referrals at Medway postcodes (out-of-area queue)")
    ] = 0.0,
    unknown_postcodes: Annotated[float, typer.Option(help="Share at postcodes in no directory (triage)")] = 0.0,
    hub_activity: Annotated[
        str | None,
        typer.Option(
            help="What hubs do, as shares of their requests: fulfilled=0.62,unable=0.07,rejected=0.03,in_progress=0.08,accepted=0.06 (the rest stays routed)"
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="The same seed and options make the same load")] = 2020,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once")] = 8,
    referrals_url: Annotated[str | None, typer.Option(help="Default http://127.0.0.1:8001 (+KT_PORT_OFFSET)")] = None,
    fulfilment_url: Annotated[str | None, typer.Option(help="Default http://127.0.0.1:8002 (+KT_PORT_OFFSET)")] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            help='Tokens from your identity provider: a file holding one administrator token, or JSON {"backfill": …, "hubs": {slug: …}}; else $KT_DEMO_TOKEN; else development tokens are minted'
        ),
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for fulfilment to route every request")] = 300.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan's figures and post nothing")] = False,
) -> None:
    """Generate a realistic demo load through the public HTTP APIs (referrals, then hub activity).

    Referrals are dated with received_at and hub transitions with at, so the
    figures land on the plan's days: that needs the backfill scopes of an
    administrator's token. Every POST carries an Idempotency-Key made from the
    plan, so a rerun after an interruption carries on without duplicates.
    """
    out = console()
    try:
        spec = _demo_spec(
            preset=preset,
            referrals=referrals,
            requests=requests,
            start=from_,
            end=to,
            mix=mix,
            channels=channels,
            districts=districts,
            out_of_area=out_of_area,
            unknown=unknown_postcodes,
            activity=hub_activity,
            seed=seed,
        )
        from services.fulfilment.postcodes import PostcodeDirectory

        plan = d.make_plan(spec, d.demo_postcodes(PostcodeDirectory.load()))
    except ValueError as error:
        out.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    _print_plan(out, plan)
    if dry_run:
        return
    try:
        tokens = _demo_tokens(token_file)
    except (ValueError, RuntimeError, OSError) as error:
        out.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    offset = int(os.environ.get("KT_PORT_OFFSET", "0") or 0)
    referrals_url = referrals_url or f"http://127.0.0.1:{registry.REFERRALS.port + offset}"
    fulfilment_url = fulfilment_url or f"http://127.0.0.1:{registry.FULFILMENT.port + offset}"

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from shared.http_client import RetryAfterTransport, polite_client

    async def main(progress: Progress) -> d.Report:
        tasks = {}

        def show(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        # Both honour the services' rate limits (429 and Retry-After): a demo is one client among many.
        async with (
            polite_client(referrals_url, max_connections=concurrency * 2) as r_client,
            polite_client(fulfilment_url, max_connections=concurrency * 2) as f_client,
        ):
            report = await d.run_demo(
                plan,
                referrals=r_client,
                fulfilment=f_client,
                tokens=tokens,
                concurrency=concurrency,
                wait_seconds=wait,
                progress=show,
            )
            report.waited_out = sum(
                client._transport.retried
                for client in (r_client, f_client)
                if isinstance(client._transport, RetryAfterTransport)
            )
            return report

    columns = (TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=out) as progress:
        report = asyncio.run(main(progress))
    _print_demo_report(out, plan, report)
    if report.failures:
        raise typer.Exit(1)


def _demo_spec(
    *,
    preset: str | None,
    referrals: int | None,
    requests: int | None,
    start: str | None,
    end: str | None,
    mix: str | None,
    channels: str | None,
    districts: str | None,
    out_of_area: float,
    unknown: float,
    activity: str | None,
    seed: int,
) -> d.LoadSpec:
    if preset is not None and preset not in d.PRESETS:
        raise ValueError(f"--preset {preset!r} is unknown; one of {', '.join(d.PRESETS)}")
    base = d.PRESETS[preset](seed=seed) if preset else None

    def day(text: str | None, option: str, default: date) -> date:
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
        referrals=count,
        requests=requests,
        start=day(start, "--from", base.start if base else today - timedelta(days=6)),
        end=day(end, "--to", base.end if base else today),
        mix=d.parse_shares(mix, option="--mix") if mix else (base.mix if base else d.APRIL_2020_MIX),
        channels=d.parse_shares(channels, option="--channels")
        if channels
        else (base.channels if base else {"phone": 0.5, "online": 0.4, "partner": 0.08, "email": 0.02}),
        districts=d.parse_shares(districts, option="--districts") if districts else d.DISTRICT_POPULATION,
        out_of_area=out_of_area,
        unknown=unknown,
        activity=d.parse_shares(activity, option="--hub-activity") if activity else dict(d.DEFAULT_ACTIVITY),
        seed=seed,
    )


def _demo_tokens(token_file: Path | None) -> d.Tokens:
    """From the file, else $KT_DEMO_TOKEN, else minted from the development key (as `kent-together token`)."""
    text = token_file.read_text().strip() if token_file else os.environ.get("KT_DEMO_TOKEN", "").strip()
    if text:
        if text.startswith("{"):
            values = json.loads(text)
            if not isinstance(values, dict) or not values.get("backfill"):
                raise ValueError('a JSON token file needs "backfill": an administrator\'s token')
            return d.Tokens(backfill=values["backfill"], hubs=values.get("hubs") or {})
        return d.Tokens(backfill=text)

    def mint(role: str, hub: str | None = None, subject: str | None = None) -> str:
        return development_token(role=role, hub=hub, subject=subject, hours=6)

    # A fixed subject: Idempotency-Keys are per caller, so a rerun must be the same caller.
    return d.Tokens(
        backfill=mint("admin", subject="kent-together-demo"),
        hubs={slug: mint("hub", hub=slug, subject=f"demo-{slug}-hub") for slug in d.HUBS},
    )


def _shares_table(title: str, counts: Counter[Any], *, total: int | None = None) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_column("share", justify="right")
    total = total if total is not None else sum(counts.values())
    for key, count in counts.most_common():
        table.add_row(str(key), f"{count:,}", f"{count / total:.1%}" if total else "-")
    return table


def _print_plan(out: Console, plan: d.Plan) -> None:
    spec = plan.spec
    days = plan.referrals_by_day()
    out.print(
        f"plan: {len(plan.referrals):,} referrals carrying {len(plan.requests):,} requests, "
        f"{spec.start} to {spec.end} ({len(days)} days, busiest {max(days.values())} a day), seed {spec.seed}"
    )
    out.print(_shares_table("requests by type (planned)", plan.requests_by_type()))


def _print_demo_report(out: Console, plan: d.Plan, report: d.Report) -> None:
    from rich.table import Table

    out.print(
        f"referrals posted: {report.posted:,} of {len(plan.referrals):,} (201; "
        f"{report.replayed:,} of them replays of an earlier run), requests: {report.requests:,}"
    )
    out.print(_shares_table("requests by type", report.by_type))
    out.print(_shares_table("referrals by place", report.by_place))
    out.print(_shares_table("referrals by channel", report.by_channel))
    table = Table(title="hub activity", title_justify="left")
    for column in ("assignments found", "transitions made", "already done (rerun)", "missing"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{sum(report.assignments_found.values()):,}",
        ", ".join(f"{k} {v:,}" for k, v in report.transitions.most_common()) or "0",
        f"{report.already_done:,}",
        f"{sum(report.assignments_missing.values()):,}",
    )
    out.print(table)
    out.print("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.seconds.items()))
    if report.waited_out:
        out.print(f"waited out {report.waited_out:,} answers to slow down (429 or 503 with Retry-After)")
    if report.failures:
        out.print(f"[red]{len(report.failures)} failures[/] (a rerun with the same options carries on):")
        for failure in report.failures[:30]:
            out.print(f"  {failure.what}: {failure.status or 'no answer'} {failure.detail}")
        if len(report.failures) > 30:
            out.print(f"  … and {len(report.failures) - 30} more")
    else:
        out.print("[green]no failures[/]")
