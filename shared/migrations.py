"""Tables every service's migrations create alike: the outbox and the inbox, for `op` in a migration.

A new migration that needs them (a new service's first revision) calls
`create_outbox(op)` and `create_inbox(op)` rather than writing their columns out
once more. They are made from the very tables the code uses
(`shared.outbox.outbox_table`, `shared.consumer.inbox_table`), so a migration
cannot drift from the model. Applied migrations are never edited: the first
ones of referrals, fulfilment, actions and reporting keep their own copies, and
`tests/integration/shared/test_migration_helpers.py` holds that these helpers
make exactly the tables those migrations leave, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Index, PrimaryKeyConstraint, Table, UniqueConstraint
from sqlalchemy.sql.elements import conv

from shared.consumer import inbox_table
from shared.db import new_metadata
from shared.outbox import outbox_table


def create_outbox(op: Any) -> None:
    """The outbox table and its indexes (the unpublished rows', and `created_at` for retention and republishing)."""
    _create(op, outbox_table(new_metadata()))


def create_inbox(op: Any) -> None:
    """The inbox table: the event ids each consumer has processed."""
    _create(op, inbox_table(new_metadata()))


def drop_outbox(op: Any) -> None:
    _drop(op, outbox_table(new_metadata()))


def drop_inbox(op: Any) -> None:
    _drop(op, inbox_table(new_metadata()))


def _create(op: Any, table: Table) -> None:
    # Constraint names are given in full (as `op.f` does), so they are the same whatever
    # naming convention the migration's context has: the ones the first migrations wrote.
    columns = [_column(column) for column in table.columns]
    constraints: list[Any] = [
        PrimaryKeyConstraint(*(c.name for c in table.primary_key.columns), name=conv(f"pk_{table.name}"))
    ]
    constraints += [
        UniqueConstraint(column.name, name=conv(f"uq_{table.name}_{column.name}"))
        for column in table.columns
        if column.unique
    ]
    op.create_table(table.name, *columns, *constraints)
    for index in sorted(table.indexes, key=_index_name):
        op.create_index(
            _index_name(index),
            table.name,
            [column.name for column in index.columns],
            unique=bool(index.unique),
            **index.dialect_kwargs,
        )


def _drop(op: Any, table: Table) -> None:
    for index in sorted(table.indexes, key=_index_name):
        op.drop_index(_index_name(index), table_name=table.name, **index.dialect_kwargs)
    op.drop_table(table.name)


def _column(column: Column[Any]) -> Column[Any]:
    return Column(
        column.name,
        column.type,
        nullable=column.nullable,
        server_default=None if column.server_default is None else column.server_default.arg,  # type: ignore[attr-defined]
        autoincrement=column.autoincrement,
    )


def _index_name(index: Index) -> str:
    if not isinstance(index.name, str):
        raise ValueError(f"an index of {index.table} has no name: name it where the table is defined")
    return index.name
