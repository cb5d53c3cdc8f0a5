"""The referrals service's tables: referrals (with the resident), requests, request types."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from services.referrals.domain import name_key
from shared.app import ServiceTables
from shared.db import BigId, UtcDateTime, new_metadata
from shared.notify import notification_tables
from shared.sealing import BlindIndex, SealedJson, SealedTable, SealedText, Sealing

metadata = new_metadata()

request_types = Table(
    "request_types",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("label", String(200), nullable=False),
    Column("description", String(500)),
    Column("active", Boolean, nullable=False, server_default="1"),
    Column("position", Integer, nullable=False, server_default="0"),
)

referrals = Table(
    "referrals",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("reference", String(20), nullable=False, unique=True),
    Column("channel", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    Column("created_by_role", String(40), nullable=False),
    # The resident and the referrer, as given on this referral: one sealed JSON object
    # (shared/crypto.py; the fields are `sealing` below).
    Column("personal", LargeBinary, nullable=False),
    # What must still be looked up, as blind indexes (keyed hashes: equality only).
    # The normalised name (words sorted), for duplicate detection; each of its words
    # (space-separated), for adviser search by whole words; the phone and the postcode.
    Column("name_index", String(32), nullable=False, index=True),
    Column("name_words", Text, nullable=False),
    Column("phone_index", String(32), index=True),
    Column("postcode_index", String(32), index=True),
    # The postcode's outward code ('CT9'), in clear: a district, not a person.
    Column("district", String(8), nullable=False),
    Column("consent", JSON, nullable=False),
    Column("possible_duplicate", Boolean, nullable=False),
    # A front-end's retry with the same key gets this referral back.
    Column("idempotency_client", String(200)),
    Column("idempotency_key", String(200)),
    Column("body_hash", String(64)),
    Column("version", Integer, nullable=False),
    # When the resident's personal data was erased (on request, or at the end of retention).
    Column("erased_at", UtcDateTime),
    # When its last request closed or was cancelled: retention counts from then.
    Column("closed_at", UtcDateTime),
    # Still open past the retention period: listed for an administrator to review, never erased unseen.
    Column("retention_review_at", UtcDateTime),
    # The resident it is about (domain.Referral.resident_id): its own id, or another's after a merge.
    Column("resident_id", String(36), index=True),
    UniqueConstraint("idempotency_client", "idempotency_key", name="uq_referrals_idempotency"),
)

requests = Table(
    "requests",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("type", String(40), ForeignKey("request_types.id"), nullable=False),
    Column("sealed_details", LargeBinary),
    Column("needed_by", Date),
    Column("urgency", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("duplicate_of", String(36)),
    Column("cancel_reason", String(40)),
    Column("cancelled_at", UtcDateTime),
    # What fulfilment's status events say (no personal data): where the request is, and since when.
    Column("progress", String(20)),
    Column("hub", String(40)),
    Column("progress_at", UtcDateTime),
    Column("outcome", String(40)),
    Column("closed_at", UtcDateTime),
    # How the help repeats (frequency, ends_on, occurrences; no personal data), and the occurrence last heard of.
    Column("recurrence", JSON),
    Column("occurrence", Integer),
    Index("ix_requests_type_status", "type", "status"),
)

referral_changes = Table(
    "referral_changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False, index=True),
    Column("at", UtcDateTime, nullable=False),
    Column("by", String(200), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("fields", JSON, nullable=False),
    Column("sealed_note", LargeBinary),
)

resident_merges = Table(
    "resident_merges",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("merged_id", String(36), nullable=False, index=True),
    Column("into_id", String(36), nullable=False, index=True),
    Column("referral_ids", JSON, nullable=False),
    Column("by", String(200), nullable=False),
    Column("at", UtcDateTime, nullable=False),
)

# Messages to residents through GOV.UK Notify (their reference; help arranged), sealed, and the log of every
# attempt to send them (shared/notify.py; services/referrals/notifications.py).
notifications, notification_attempts = notification_tables(metadata)

tables = ServiceTables(metadata, with_audit=True)

PERSONAL_FIELDS = (
    "name",
    "date_of_birth",
    "phone",
    "email",
    "address_line1",
    "address_line2",
    "town",
    "postcode",
    "contact_preference",
    "vulnerabilities",
    "language",
    "referrer",
)
"""A referral's fields about the resident and referrer: stored as one sealed JSON object (`personal`)."""


def _name_key(fields) -> str:
    return fields.get("name_key") or name_key(fields["name"])  # intake's row has it already


sealing = Sealing(
    SealedTable(
        referrals,
        blob=SealedJson("personal", fields=PERSONAL_FIELDS, dates=("date_of_birth",)),
        indexes=(
            # The normalised name (words sorted): duplicate detection; each of its words: adviser search.
            BlindIndex("name_index", purpose="name", value=_name_key),
            BlindIndex("name_words", purpose="name-word", value=_name_key, words=True),
            BlindIndex("phone_index", purpose="phone", value=lambda f: f["phone"] or None),
            BlindIndex("postcode_index", purpose="postcode", value=lambda f: f["postcode"]),
        ),
        indexes_frozen_when="erased_at",  # an erased resident's markers: nothing to look up
    ),
    SealedTable(requests, texts=(SealedText("sealed_details", field="details"),)),
    SealedTable(referral_changes, texts=(SealedText("sealed_note", field="note"),)),
)
"""What of the referrals' tables is sealed and indexed (shared/sealing.py): the repository and rekey read it."""
