"""The reporting service's read models: facts and pre-aggregated counts, never personal data.

`request_facts` holds one row per request (ids, type, channel, district, hub,
status, times, outcome); `request_counts` holds the same facts added up by day,
district and one dimension at a time, so a figure reads a few hundred rows
whatever the volume. District `*` is every district together.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Date, Index, Integer, String, Table

from shared.app import ServiceTables
from shared.db import BigId, UtcDateTime, new_metadata

metadata = new_metadata()

request_facts = Table(
    "request_facts",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("referral_id", String(36), nullable=False, index=True),
    Column("request_type", String(40)),
    Column("channel", String(20)),
    Column("urgency", String(20)),
    Column("postcode_district", String(4)),  # the outward code only ("CT9"), never a full postcode
    Column("district", String(40), nullable=False),
    Column("district_code", String(9)),
    Column("hub", String(40)),
    Column("status", String(20), nullable=False),
    Column("outcome", String(40)),
    Column("cancel_reason", String(40)),
    Column("council_code", String(9)),
    Column("possible_duplicate", Boolean, nullable=False),
    Column("out_of_area", Boolean, nullable=False),
    Column("triaged", Boolean, nullable=False),
    Column("accept_breached", Boolean, nullable=False),
    Column("fulfil_breached", Boolean, nullable=False),
    Column("received_at", UtcDateTime),
    Column("received_day", Date),
    Column("routed_at", UtcDateTime),
    Column("accepted_at", UtcDateTime),
    Column("closed_at", UtcDateTime),
    Column("accept_due_at", UtcDateTime),
    Column("fulfil_due_at", UtcDateTime),
    Column("status_changed_at", UtcDateTime),
    Column("updated_at", UtcDateTime, nullable=False),
    # A recurring request's occurrence: its series (the first occurrence's request id), which one, how often.
    Column("series_id", String(36)),
    Column("occurrence", Integer),
    Column("frequency", String(20)),
    Index("ix_request_facts_day_district", "received_day", "district"),
    Index("ix_request_facts_status", "status"),
)

referral_facts = Table(
    "referral_facts",
    metadata,
    Column("referral_id", String(36), primary_key=True),
    Column("channel", String(20)),
    Column("district", String(40), nullable=False),
    Column("received_at", UtcDateTime),
    Column("received_day", Date),
    Column("updated_at", UtcDateTime, nullable=False),
)

request_counts = Table(
    "request_counts",
    metadata,
    Column("day", Date, primary_key=True),
    Column("district", String(40), primary_key=True),
    Column("dimension", String(20), primary_key=True),
    Column("value", String(40), primary_key=True),
    Column("count", BigId, nullable=False),
    # What every figure reads: one dimension, one district (or `*`), a range of days.
    Index("ix_request_counts_dimension_district_day", "dimension", "district", "day"),
)

action_facts = Table(
    "action_facts",
    metadata,
    Column("action_id", String(36), primary_key=True),
    Column("plan", String(60), nullable=False),
    Column("cell", String(60), nullable=False),
    Column("number", Integer, nullable=False),
    Column("theme", String(100)),
    Column("kind", String(20), nullable=False),
    Column("priority", String(20), nullable=False),
    Column("timescale", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("rag", String(10)),
    Column("progress", Integer, nullable=False),
    Column("baseline_due_date", Date, nullable=False),
    Column("due_date", Date, nullable=False),
    Column("changed_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# One row per read model ("requests", "actions"): when it last changed, and a
# counter that changes with it (the ETag's base).
projection_state = Table(
    "projection_state",
    metadata,
    Column("model", String(20), primary_key=True),
    Column("version", BigId, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

tables = ServiceTables(metadata, with_idempotency=False)  # it takes no POSTs
