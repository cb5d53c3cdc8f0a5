"""Finishing a key rotation: every sealed value sealed again with the current data key, every blind index made
again with the current index key (`kent-together rekey`; docs/security.md has the operator's procedure).

What is sealed is found, not listed: every `LargeBinary` column of every table of the
service's metadata is read, and each value in it that carries a `kt1:<key id>:` header
naming another key than the sealing one is opened and sealed again. A column added
later is re-sealed without a change here (tests/integration/trust/test_rekey.py scans
every column of every table for a value left behind). Values that are not sealed
(outbox rows of events without personal data) are left as they are. What is *derived*
from sealed data (the blind indexes) cannot be found that way: it is read from the
service's declaration of its sealed columns (shared/sealing.py, `rekey(..., sealing=...)`).

Safe beside the running service: rows are read in batches (a short transaction),
worked out with no transaction open, and written in a transaction per batch, each row
with a compare-and-set (`UPDATE … WHERE <primary key> AND <column> = <the value read>`),
so an amendment or erasure committed in between is never overwritten with what was
read before it; such a row is read again and done again (or found already done: the
service seals with the current key too). The plaintext never changes, so neither the
API nor the relay, the feed or the webhooks see a difference.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Column, LargeBinary, MetaData, RowMapping, Table, and_, or_, select, tuple_, update
from sqlalchemy.engine import CursorResult

from shared.crypto import CryptoError, Keyring, is_sealed
from shared.db import Database

if TYPE_CHECKING:
    from shared.sealing import Sealing


MAX_ATTEMPTS = 5
"""How often a row changed under us is read again before it is left for the next run."""


@dataclass(frozen=True)
class DerivedColumns:
    """Columns made from a sealed column with the keys (blind indexes): recomputed by rekey, not found by type."""

    table: Table
    source: str
    """The sealed column they are made from: the compare-and-set guards it."""
    columns: tuple[str, ...]
    compute: Callable[[Mapping[Any, Any], Keyring], dict[str, Any]]  # a row: RowMapping's keys are str | Column
    """(stored row, keyring) -> {column: value} with the current keys; {} leaves the row's columns as they are."""
    reads: tuple[str, ...] = ()
    """Other columns `compute` needs."""


@dataclass
class TableReport:
    table: str
    examined: int = 0
    """Rows read."""
    resealed: int = 0
    """Sealed values sealed again with the current data key."""
    reindexed: int = 0
    """Rows whose derived columns (blind indexes) were made again with the current index key."""
    changed_meanwhile: int = 0
    """Rows changed by the service between rekey's read and write: read again and done again."""
    left: int = 0
    """Rows still changing after MAX_ATTEMPTS, or that cannot be opened: a later run takes them."""
    unreadable: int = 0
    """Values no key of the keyring opens (a key removed too early, or a damaged value)."""


@dataclass
class Census:
    """What the tables hold after a run: which keys sealed the values, and how many indexes are stale."""

    sealing_key_id: str
    key_ids: Counter[str] = field(default_factory=Counter)
    """Data key id -> sealed values."""
    by_column: dict[str, Counter[str]] = field(default_factory=dict)
    """`table.column` -> Counter of key ids."""
    stale_indexes: int = 0
    """Rows whose blind indexes are not the current index key's."""
    unreadable: int = 0

    @property
    def finished(self) -> bool:
        return set(self.key_ids) <= {self.sealing_key_id} and not self.stale_indexes and not self.unreadable


def sealed_columns(table: Table) -> list[str]:
    """Where a table may hold sealed values: its binary columns."""
    return [column.name for column in table.columns if isinstance(column.type, LargeBinary)]


def _work(metadata: MetaData, derived: Iterable[DerivedColumns]) -> list[tuple[Table, list[str], list[DerivedColumns]]]:
    work = []
    for table in metadata.sorted_tables:
        mine = [d for d in derived if d.table.name == table.name]
        sealed = sealed_columns(table)
        if sealed or mine:
            work.append((table, sealed, mine))
    return work


def _columns_read(table: Table, sealed: list[str], derived: list[DerivedColumns]) -> list[Column[Any]]:
    names = [c.name for c in table.primary_key.columns]
    for name in [*sealed, *(n for d in derived for n in (d.source, *d.columns, *d.reads))]:
        if name not in names:
            names.append(name)
    return [table.c[name] for name in names]


async def _batches(
    db: Database, table: Table, columns: list[Column[Any]], *, size: int
) -> AsyncIterator[Sequence[RowMapping]]:
    """The table's rows in primary-key order, `size` at a time, each batch read in a transaction of its own."""
    key = list(table.primary_key.columns)
    last = None
    while True:
        query = select(*columns).order_by(*key).limit(size)
        if last is not None:
            query = query.where(key[0] > last[0] if len(key) == 1 else tuple_(*key) > tuple_(*last))
        async with db.sessions() as session:
            rows = (await session.execute(query)).mappings().all()
        if not rows:
            return
        yield rows
        if len(rows) < size:
            return
        last = tuple(rows[-1][c.name] for c in key)


def _plan(
    row: RowMapping, sealed: list[str], derived: list[DerivedColumns], keyring: Keyring, report: TableReport
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(changes, guards) for one row: what to write, and the values read that must still be there."""
    changes: dict[str, Any] = {}
    guards: dict[str, Any] = {}
    for name in sealed:
        value = row[name]
        if not is_sealed(value) or keyring.key_id_of(value) == keyring.sealing_key_id:
            continue
        try:
            changes[name] = keyring.seal(keyring.open(value))
        except CryptoError:
            report.unreadable += 1
            return None
        guards[name] = value
    for d in derived:
        try:
            wanted = d.compute(row, keyring)
        except CryptoError:
            report.unreadable += 1
            return None
        stale = {name: value for name, value in wanted.items() if row[name] != value}
        if stale:
            changes.update(stale)
            guards[d.source] = row[d.source]
    return changes, guards


async def rekey_table(
    db: Database,
    table: Table,
    sealed: list[str],
    derived: list[DerivedColumns],
    keyring: Keyring,
    *,
    batch: int = 500,
    dry_run: bool = False,
    after_read: Callable[[str, int], Awaitable[None]] | None = None,
) -> TableReport:
    report = TableReport(table.name)
    key = list(table.primary_key.columns)
    columns = _columns_read(table, sealed, derived)
    number = 0
    async for rows in _batches(db, table, columns, size=batch):
        report.examined += len(rows)
        pending = rows
        for attempt in range(MAX_ATTEMPTS):
            plans = []
            for row in pending:
                plan = _plan(row, sealed, derived, keyring, report)
                if plan is not None and plan[0]:
                    plans.append((row, *plan))
            if attempt == 0:
                number += 1
                if after_read is not None:  # tests: a change made between the read and the write
                    await after_read(table.name, number)
            if dry_run or not plans:
                _count(report, plans, sealed, derived)
                break
            missed = []
            async with db.sessions() as session:
                async with session.begin():
                    for row, changes, guards in plans:
                        where = [c == row[c.name] for c in key]
                        where += [
                            table.c[n] == old if old is not None else table.c[n].is_(None) for n, old in guards.items()
                        ]
                        result = await session.execute(update(table).where(and_(*where)).values(**changes))
                        if cast("CursorResult[Any]", result).rowcount != 1:
                            missed.append(row)
            _count(report, [p for p in plans if p[0] not in missed], sealed, derived)
            if not missed:
                break
            report.changed_meanwhile += len(missed)
            async with db.sessions() as session:  # read again: what the service wrote meanwhile
                pending = (
                    (
                        await session.execute(
                            select(*columns).where(or_(*(and_(*(c == row[c.name] for c in key)) for row in missed)))
                        )
                    )
                    .mappings()
                    .all()
                )
        else:
            report.left += len(pending)
    return report


def _count(
    report: TableReport,
    plans: Sequence[tuple[RowMapping, dict[str, Any], dict[str, Any]]],
    sealed: list[str],
    derived: list[DerivedColumns],
) -> None:
    index_columns = {n for d in derived for n in d.columns}
    for _, changes, _ in plans:
        report.resealed += sum(1 for n in changes if n in sealed)
        report.reindexed += 1 if index_columns & set(changes) else 0


def _derived(derived: Iterable[DerivedColumns], sealing: Sealing | None) -> tuple[DerivedColumns, ...]:
    return (*derived, *(sealing.derived() if sealing is not None else ()))


async def rekey(
    db: Database,
    metadata: MetaData,
    keyring: Keyring,
    *,
    sealing: Sealing | None = None,
    derived: Iterable[DerivedColumns] = (),
    batch: int = 500,
    dry_run: bool = False,
    after_read: Callable[[str, int], Awaitable[None]] | None = None,
    progress: Callable[[TableReport], None] | None = None,
) -> list[TableReport]:
    """Seal again with the current data key, and remake the blind indexes `sealing` declares, every table.

    `sealing`: the service's shared/sealing.py `Sealing`; `derived`: DerivedColumns given by hand (older callers).
    """
    derived = _derived(derived, sealing)
    reports = []
    for table, sealed, mine in _work(metadata, derived):
        report = await rekey_table(
            db, table, sealed, mine, keyring, batch=batch, dry_run=dry_run, after_read=after_read
        )
        reports.append(report)
        if progress is not None:
            progress(report)
    return reports


async def census(
    db: Database,
    metadata: MetaData,
    keyring: Keyring,
    *,
    sealing: Sealing | None = None,
    derived: Iterable[DerivedColumns] = (),
    batch: int = 1000,
) -> Census:
    """Which data keys the stored values are sealed with, and how many blind indexes are not the current key's."""
    derived = _derived(derived, sealing)
    found = Census(keyring.sealing_key_id)
    for table, sealed, mine in _work(metadata, derived):
        for name in sealed:
            found.by_column[f"{table.name}.{name}"] = Counter()
        async for rows in _batches(db, table, _columns_read(table, sealed, mine), size=batch):
            for row in rows:
                for name in sealed:
                    if is_sealed(row[name]):
                        key_id = keyring.key_id_of(row[name])
                        found.key_ids[key_id] += 1
                        found.by_column[f"{table.name}.{name}"][key_id] += 1
                for d in mine:
                    try:
                        wanted = d.compute(row, keyring)
                    except CryptoError:
                        found.unreadable += 1
                        continue
                    if any(row[n] != v for n, v in wanted.items()):
                        found.stale_indexes += 1
    return found
