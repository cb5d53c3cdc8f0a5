"""The actions service's tables: plans, their recovery cells, actions, their history and links."""

from __future__ import annotations

import json

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Date,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

from shared.app import ServiceTables
from shared.db import BigId, UtcDateTime, new_metadata

metadata = new_metadata()


class JsonText(TypeDecorator):
    """Any JSON value kept as text, numbers included.

    SQLite gives a JSON column numeric affinity, so a bare number written
    through the JSON type comes back a number that the JSON reader refuses.
    """

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        return None if value is None else json.dumps(value, ensure_ascii=False)

    def process_result_value(self, value, dialect):
        return None if value is None else json.loads(value)


plans = Table(
    "plans",
    metadata,
    Column("slug", String(60), primary_key=True),
    Column("title", String(300), nullable=False),
    # Due dates are counted from here: Short Term ends 6 months after it, and so on.
    Column("starts_on", Date, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

cells = Table(
    "cells",
    metadata,
    Column("plan", String(60), ForeignKey("plans.slug"), primary_key=True),
    Column("slug", String(60), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("position", Integer, nullable=False),
)

actions = Table(
    "actions",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("plan", String(60), nullable=False),
    Column("cell", String(60), nullable=False),
    Column("number", Integer, nullable=False),
    # The plan's own columns: an import writes these, and nothing else does.
    Column("theme", String(200)),
    Column("theme_slug", String(200)),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False),
    Column("ongoing", Boolean, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("kind_text", String(200), nullable=False),
    Column("priority", String(20), nullable=False),
    Column("timescale", String(20), nullable=False),
    Column("timescale_text", String(200), nullable=False),
    Column("lead_organisations", JSON, nullable=False),
    Column("lead_organisation_text", Text, nullable=False),
    Column("named_leads", JSON, nullable=False),
    Column("named_lead_text", Text, nullable=False),
    Column("resources", Text, nullable=False),
    Column("cross_references", JSON, nullable=False),
    Column("baseline_due_date", Date, nullable=False),
    # Tracking: written through the API only, never by an import.
    Column("status", String(20), nullable=False),
    Column("blocked_reason", Text),
    Column("rag", String(10)),
    Column("rag_narrative", Text),
    Column("self_rating", String(20)),
    Column("self_rating_commentary", Text),
    Column("independent_rating", String(20)),
    Column("independent_rating_commentary", Text),
    Column("progress", Integer, nullable=False),
    Column("agreed_due_date", Date),
    Column("completed_at", UtcDateTime),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    Column("version", Integer, nullable=False),
    ForeignKeyConstraint(["plan", "cell"], ["cells.plan", "cells.slug"], name="fk_actions_cell_cells"),
    UniqueConstraint("plan", "cell", "number", name="uq_actions_plan_cell_number"),
    Index("ix_actions_plan_status", "plan", "status"),
)

action_updates = Table(
    "action_updates",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("action_id", String(36), ForeignKey("actions.id"), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("by", String(200), nullable=False),
    Column("by_role", String(40), nullable=False),
    # created (by an import), revised (by a re-import), changed (tracking), update (a narrative), linked
    Column("kind", String(20), nullable=False),
    Column("field", String(60)),
    Column("old", JsonText),
    Column("new", JsonText),
    Column("narrative", Text),
    Column("update_on", Date),  # a narrative update: the date it speaks for
    Index("ix_action_updates_action_id_at", "action_id", "at"),
)

action_links = Table(
    "action_links",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("from_action", String(36), ForeignKey("actions.id"), nullable=False),
    Column("to_action", String(36), ForeignKey("actions.id"), nullable=False, index=True),
    # plan (a cross reference in the plan's text) or manual (added through the API)
    Column("source", String(20), nullable=False),
    Column("note", Text),
    Column("created_at", UtcDateTime, nullable=False),
    Column("created_by", String(200), nullable=False),
    UniqueConstraint("from_action", "to_action", name="uq_action_links_from_to"),
)

tables = ServiceTables(metadata)
