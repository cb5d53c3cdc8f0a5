"""The web service's one table: sessions. It owns no business data; the four services hold that."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, LargeBinary, MetaData, String, Table

from shared.db import UtcDateTime, new_metadata

metadata = new_metadata()

sessions = Table(
    "web_sessions",
    metadata,
    # The SHA-256 of the cookie's value: the table alone lets nobody take over a session.
    Column("id", String(64), primary_key=True),
    # Sealed with the data keys: a resident's answers between pages are personal data.
    Column("data", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False, index=True),
)


@dataclass(frozen=True)
class WebTables:
    """What `kent-together rekey` reads of a service (suite/keys.py): its metadata, and that it holds sealed data."""

    metadata: MetaData
    personal: bool = True
    """The sessions hold a resident's answers between pages, sealed with the data keys: rekey re-seals them."""


tables = WebTables(metadata)
