"""The fulfilment service's tables: hubs, the residents' referrals as received, assignments and their history."""

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
    text,
)

from shared.app import ServiceTables
from shared.db import BigId, UtcDateTime, new_metadata
from shared.notify import notification_tables

metadata = new_metadata()

hubs = Table(
    "hubs",
    metadata,
    Column("slug", String(40), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("district_code", String(9), nullable=False, unique=True),
    Column("email", String(320)),
    Column("phone", String(40)),
    Column("hours", String(200)),
    Column("webhook_url", String(2000)),
    Column("webhook_secret", String(200)),
    # Overrides of the county's SLA by urgency: {"today": {"accept_hours": 2}}.
    Column("sla", JSON, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("updated_by", String(200), nullable=False),
)

# One row per hub, locked while a transaction appends to that hub's feed, so a
# hub's feed sequence is handed out in commit order (see service.append_to_feeds).
feed_heads = Table(
    "feed_heads",
    metadata,
    Column("hub", String(40), ForeignKey("hubs.slug"), primary_key=True),
    Column("last_seq", BigId, nullable=False),
)

hub_feed = Table(
    "hub_feed",
    metadata,
    Column("hub", String(40), ForeignKey("hubs.slug"), primary_key=True),
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("event_id", String(36), nullable=False),
    Column("type", String(200), nullable=False),
    Column("assignment_id", String(36), nullable=False),
    # The CloudEvent as on the hub's topic, byte for byte, sealed (shared/crypto.py): it names the resident.
    Column("event", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

# The resident as the referral last described them: what a hub needs to help.
referrals = Table(
    "referrals",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("reference", String(20), nullable=False),
    Column("channel", String(20), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    # {"resident": ..., "referrer": ...} as the event gave them, sealed in one JSON object (shared/crypto.py).
    Column("personal", LargeBinary, nullable=False),
    Column("consent_to_share", Boolean, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # When the resident's details were erased here (on request, or at the end of retention).
    Column("erased_at", UtcDateTime),
    # The resident it is about, as referrals named them (an id): `resident_merges` says whom it is now.
    Column("resident_id", String(36), index=True),
)

# Two residents recorded twice, merged by referrals (`residents.merged.v1`): the merged one is now `into_id`.
# Kept flat (a later merge of `into_id` re-points every row that named it), so one join resolves any chain.
resident_merges = Table(
    "resident_merges",
    metadata,
    Column("merged_id", String(36), primary_key=True),
    Column("into_id", String(36), nullable=False, index=True),
    Column("merged_at", UtcDateTime, nullable=False),
)

assignments = Table(
    "assignments",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("request_id", String(36), nullable=False, unique=True),
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False, index=True),
    Column("request_type", String(40), nullable=False),
    Column("sealed_details", LargeBinary),
    Column("needed_by", Date),
    Column("urgency", String(20), nullable=False),
    Column("duplicate_of", String(36)),
    Column("status", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("hub", String(40), ForeignKey("hubs.slug")),
    Column("district_code", String(9)),
    Column("council_code", String(9)),
    Column("council_name", String(200)),
    Column("received_at", UtcDateTime, nullable=False),
    Column("routed_at", UtcDateTime),
    Column("accepted_at", UtcDateTime),
    Column("closed_at", UtcDateTime),
    Column("outcome", String(40)),
    Column("accept_due_at", UtcDateTime),
    Column("fulfil_due_at", UtcDateTime),
    Column("accept_escalated_at", UtcDateTime),
    Column("fulfil_escalated_at", UtcDateTime),
    Column("rejected_by", JSON, nullable=False),
    Column("follow_up", Boolean, nullable=False, server_default="0"),
    Column("follow_up_on", Date),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    # A recurring request's occurrence: its series, and which one (services/fulfilment/domain.py `Series`).
    Column("series_id", String(36)),
    Column("occurrence", Integer),
    Index("ix_assignments_hub_status", "hub", "status"),
    # One assignment per occurrence of a series, whatever is retried or redelivered.
    Index("ux_assignments_series_occurrence", "series_id", "occurrence", unique=True),
    Index("ix_assignments_status_routed_at", "status", "routed_at"),
    # The scheduler's two questions, over the rows not yet escalated only.
    Index(
        "ix_assignments_accept_to_escalate",
        "accept_due_at",
        postgresql_where=text("accept_escalated_at IS NULL"),
        sqlite_where=text("accept_escalated_at IS NULL"),
    ),
    Index(
        "ix_assignments_fulfil_to_escalate",
        "fulfil_due_at",
        postgresql_where=text("fulfil_escalated_at IS NULL"),
        sqlite_where=text("fulfil_escalated_at IS NULL"),
    ),
)

# Recurring requests: the schedule and how far along it is (the occurrences are assignments).
series = Table(
    "series",
    metadata,
    Column("id", String(36), primary_key=True),  # the recurring request's id, as referrals took it
    Column("referral_id", String(36), ForeignKey("referrals.id"), nullable=False, index=True),
    Column("frequency", String(20), nullable=False),
    Column("starts_at", UtcDateTime, nullable=False),
    Column("ends_on", Date),
    Column("occurrences", Integer),
    Column("made", Integer, nullable=False),
    Column("ended_at", UtcDateTime),
    Column("ended_reason", String(80)),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

assignment_changes = Table(
    "assignment_changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("assignment_id", String(36), ForeignKey("assignments.id"), nullable=False, index=True),
    Column("at", UtcDateTime, nullable=False),
    Column("by", String(200), nullable=False),
    Column("from_status", String(20)),
    Column("to_status", String(20), nullable=False),
    Column("from_hub", String(40)),
    Column("to_hub", String(40)),
    Column("reason", Text),
    Column("outcome", String(40)),
    Column("sealed_note", LargeBinary),
)

# Case notes and contact attempts, as hub staff record them.
case_notes = Table(
    "case_notes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("assignment_id", String(36), ForeignKey("assignments.id"), nullable=False, index=True),
    Column("kind", String(20), nullable=False),  # note, contact-attempt
    Column("contact_outcome", String(20)),
    Column("sealed_text", LargeBinary),
    Column("hub", String(40)),
    Column("at", UtcDateTime, nullable=False),
    Column("by", String(200), nullable=False),
)

escalations = Table(
    "escalations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("assignment_id", String(36), ForeignKey("assignments.id"), nullable=False, index=True),
    Column("deadline", String(10), nullable=False),
    Column("due_at", UtcDateTime, nullable=False),
    Column("escalated_at", UtcDateTime, nullable=False),
    Column("status", String(20), nullable=False),
    Column("hub", String(40)),
    UniqueConstraint("assignment_id", "deadline", "due_at", name="uq_escalations_once"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("hub", String(40), ForeignKey("hubs.slug"), nullable=False),
    Column("feed_seq", BigId, nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("type", String(200), nullable=False),
    Column("url", String(2000), nullable=False),
    Column("status", String(20), nullable=False),  # pending, delivered, failed (gave up)
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", UtcDateTime, nullable=False),
    Column("last_attempt_at", UtcDateTime),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("delivered_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("hub", "feed_seq", name="uq_webhook_deliveries_hub_seq"),
    Index(
        "ix_webhook_deliveries_due",
        "next_attempt_at",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
)

# Who in a hub holds each case, and when its resident is next to be called (services/fulfilment/assignees.py).
case_holders = Table(
    "case_holders",
    metadata,
    Column("assignment_id", String(36), ForeignKey("assignments.id"), primary_key=True),
    Column("hub", String(40), nullable=False),
    Column("holder", String(200)),  # the hub worker's subject; null: nobody holds it
    Column("holder_name", String(200)),
    Column("held_since", UtcDateTime),
    Column("next_contact_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
    Index("ix_case_holders_hub_holder", "hub", "holder"),
)

holder_changes = Table(
    "holder_changes",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("assignment_id", String(36), ForeignKey("assignments.id"), nullable=False, index=True),
    Column("at", UtcDateTime, nullable=False),
    Column("by", String(200), nullable=False),
    Column("by_name", String(200)),
    Column("change", String(20), nullable=False),  # taken, handed-over, released, next-contact
    Column("from_holder", String(200)),
    Column("from_name", String(200)),
    Column("to_holder", String(200)),
    Column("to_name", String(200)),
    Column("next_contact_at", UtcDateTime),
)

# Each hub's workers as fulfilment has seen them (services/fulfilment/assignees.py): whom a case can be handed to.
hub_staff = Table(
    "hub_staff",
    metadata,
    Column("hub", String(40), primary_key=True),
    Column("subject", String(200), primary_key=True),  # the token's `sub`
    Column("name", String(200)),  # the token's `name` claim, as colleagues know them
    Column("first_seen_at", UtcDateTime, nullable=False),
    Column("last_seen_at", UtcDateTime, nullable=False),
)

# Messages to hubs through GOV.UK Notify, and the log of every attempt (shared/notify.py).
notifications, notification_attempts = notification_tables(metadata)

tables = ServiceTables(metadata, with_audit=True)
