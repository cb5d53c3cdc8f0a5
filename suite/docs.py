"""`docs`: the AsyncAPI document, each service's OpenAPI document and the event catalogue, written into docs/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from suite import registry


def docs(out: Annotated[Path, typer.Option(help="Where to write")] = Path("docs")) -> None:
    """Write the AsyncAPI document, each service's OpenAPI document and the event catalogue into docs/."""
    from shared.asyncapi import render
    from suite.events_doc import render_catalogue

    (out / "openapi").mkdir(parents=True, exist_ok=True)
    (out / "asyncapi.json").write_text(render())
    for name, text in openapi_documents().items():
        (out / "openapi" / f"{name}.json").write_text(text)
    (out / "events.md").write_text(render_catalogue())
    typer.echo(f"wrote {out}/asyncapi.json, {out}/events.md and {out}/openapi/")


def openapi_documents() -> dict[str, str]:
    """Each service's OpenAPI document as `docs/openapi/<service>.json` holds it."""
    documents = {}
    for spec in registry.SERVICES:
        settings = spec.settings().model_copy(update={"jwt_signing_key": "docs", "log_json": False})
        documents[spec.name] = json.dumps(spec.create_app(settings).openapi(), indent=2) + "\n"
    return documents
