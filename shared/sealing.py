"""Which columns of a service's tables are sealed, and which blind indexes are made from them: declared once.

A service declares its sealed tables beside its tables (services/referrals/models.py
`sealing`), and everything that seals, opens, indexes or rotates reads that one
declaration: the repository (rows in and out), `kent-together rekey` (shared/rekey.py
`rekey(..., sealing=...)`), and any later sealing migration (`SealedTable.seal` over
the rows it reads; a migration already applied is never edited to use it).

    sealing = Sealing(
        SealedTable(
            referrals,
            blob=SealedJson("personal", fields=("name", "phone", "postcode", ...)),
            indexes=(
                BlindIndex("name_index", purpose="name", value=lambda f: name_key(f["name"])),
                BlindIndex("name_words", purpose="name-word", value=lambda f: name_key(f["name"]), words=True),
                BlindIndex("phone_index", purpose="phone", value=lambda f: f["phone"]),
            ),
            indexes_frozen_when="erased_at",
        ),
        SealedTable(requests, texts=(SealedText("sealed_details", field="details"),)),
    )

    stored = sealing["referrals"].seal(row, keyring)      # clear row -> row as stored
    row = sealing["referrals"].open(stored, keyring)      # stored row -> clear row (the stored columns stay)
    sealing["referrals"].lookup("phone_index", "+441843577000", keyring)  # what a WHERE ... IN matches

- `SealedJson(column, fields=...)`: several fields of a row kept as one sealed JSON object
  (one encryption per row: intake speed is measured). `open` gives the fields back at the
  top level of the row; `dates=` names fields to read back as `datetime.date`.
- `SealedText(column, field=...)`: one optional text field sealed into its own column
  (`details` -> `sealed_details`).
- `SealedBytes(column)`: a column holding sealed bytes the caller seals whole (a stored event).
- `BlindIndex(column, purpose=, value=)`: a keyed hash of `value(fields)` (normalised already),
  None when the value is; `words=True` stores one hash per space-separated word. Lookups use
  `lookup` (both index keys while the index key is rotated, shared/crypto.py).
- `indexes_frozen_when`: a column which, when set on a row, means its indexes are markers
  (an erased resident's) that neither the service nor rekey recomputes.

Rekey still re-seals every binary column it finds (a column added later is never left
behind); what it cannot find by type (the blind indexes) comes from here, through
`Sealing.derived()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, ClassVar

from sqlalchemy import Table

from shared.crypto import Keyring

if TYPE_CHECKING:
    from shared.rekey import DerivedColumns


@dataclass(frozen=True)
class SealedJson:
    """Fields of a row kept together as one sealed JSON object in `column`."""

    column: str
    fields: tuple[str, ...]
    dates: tuple[str, ...] = ()
    """Fields stored as ISO dates, read back as `date`."""


@dataclass(frozen=True)
class SealedText:
    """One optional text `field` sealed into its own `column`."""

    column: str
    field: str


@dataclass(frozen=True)
class SealedBytes:
    """A column of sealed bytes its owner seals and opens whole (an event kept for a hub's feed)."""

    column: str


@dataclass(frozen=True)
class BlindIndex:
    """A lookup column: a keyed hash of a normalised value made from the row's opened fields."""

    column: str
    purpose: str
    value: Callable[[Mapping[str, Any]], str | None]
    words: bool = False
    """One hash per word of the value, space-separated (whole-word search)."""

    def make(self, fields: Mapping[str, Any], keyring: Keyring) -> str | None:
        return self.hash(self.value(fields), keyring)

    def hash(self, value: str | None, keyring: Keyring) -> str | None:
        """The index of an already-normalised value."""
        if value is None:
            return None
        if self.words:
            return " ".join(keyring.blind_index(self.purpose, word) for word in value.split())
        return keyring.blind_index(self.purpose, value)


@dataclass(frozen=True)
class SealedTable:
    """What of one table is sealed, and the blind indexes made from it."""

    table: Table
    blob: SealedJson | None = None
    texts: tuple[SealedText, ...] = ()
    binary: tuple[SealedBytes, ...] = ()
    indexes: tuple[BlindIndex, ...] = ()
    indexes_frozen_when: str | None = None

    if TYPE_CHECKING:
        # Set per instance in __post_init__; ClassVar only keeps it out of the dataclass fields mypy sees.
        _sealed_away: ClassVar[frozenset[str]]

    def __post_init__(self) -> None:
        # Read per row on the intake hot path: worked out once.
        object.__setattr__(self, "_sealed_away", frozenset(self.personal_fields))

    @property
    def name(self) -> str:
        return self.table.name

    @property
    def columns(self) -> tuple[str, ...]:
        """The sealed columns (what a census counts)."""
        return (
            *((self.blob.column,) if self.blob else ()),
            *(t.column for t in self.texts),
            *(b.column for b in self.binary),
        )

    @property
    def personal_fields(self) -> tuple[str, ...]:
        """The clear fields this table seals: what is personal in it."""
        return (*(self.blob.fields if self.blob else ()), *(t.field for t in self.texts))

    def seal(self, row: Mapping[str, Any], keyring: Keyring) -> dict[str, Any]:
        """A row with its fields in clear, as stored: fields sealed, indexes made, other keys kept."""
        sealed_away = self._sealed_away
        stored = {k: v for k, v in row.items() if k not in sealed_away}
        if self.blob is not None:
            stored[self.blob.column] = keyring.seal_json({f: row[f] for f in self.blob.fields})
        for text in self.texts:
            if text.field in row:
                stored[text.column] = keyring.seal_text(row[text.field])
        if self.indexes:
            stored.update(self.index(row, keyring))
        return stored

    def seal_fields(self, fields: Mapping[str, Any], keyring: Keyring) -> dict[str, Any]:
        """The blob column and the indexes for changed personal `fields` (every blob field given)."""
        values: dict[str, Any] = {}
        if self.blob is not None:
            values[self.blob.column] = keyring.seal_json({f: fields[f] for f in self.blob.fields})
        values.update(self.index(fields, keyring))
        return values

    def index(self, fields: Mapping[str, Any], keyring: Keyring) -> dict[str, Any]:
        """The blind-index columns of these (clear) fields, with the current index key."""
        values: dict[
            Callable[[Mapping[str, Any]], str | None], str | None
        ] = {}  # indexes made from the same value (a name, and its words) normalise it once
        made = {}
        for index in self.indexes:
            if index.value not in values:
                values[index.value] = index.value(fields)
            made[index.column] = index.hash(values[index.value], keyring)
        return made

    def open(self, row: Mapping[str, Any], keyring: Keyring) -> dict[str, Any]:
        """A stored row with its sealed fields opened at the top level (the stored columns stay too)."""
        opened = dict(row)
        if self.blob is not None and self.blob.column in row:
            fields = keyring.open_json(row[self.blob.column])
            for name in self.blob.dates:
                if fields.get(name) is not None:
                    fields[name] = date.fromisoformat(fields[name])
            opened.update(fields)
        for text in self.texts:
            if text.column in row:
                opened[text.field] = keyring.open_text(row[text.column])
        return opened

    def lookup(self, column: str, value: str, keyring: Keyring) -> tuple[str, ...]:
        """The stored index values a lookup of `value` (normalised) in `column` matches: both keys while rotating."""
        index = next(i for i in self.indexes if i.column == column)
        return keyring.blind_indexes(index.purpose, value)

    def reindexed(self, row: Mapping[str, Any], keyring: Keyring) -> dict[str, Any]:
        """A stored row's blind indexes made again with the current key ({} for a row whose indexes are frozen)."""
        if self.indexes_frozen_when is not None and row[self.indexes_frozen_when] is not None:
            return {}
        return self.index(self.open(row, keyring), keyring)

    def derived(self) -> DerivedColumns | None:
        """What `kent-together rekey` recomputes in this table besides re-sealing, or None."""
        from shared.rekey import DerivedColumns

        if not self.indexes or self.blob is None:
            return None
        return DerivedColumns(
            table=self.table,
            source=self.blob.column,
            columns=tuple(i.column for i in self.indexes),
            reads=(self.indexes_frozen_when,) if self.indexes_frozen_when else (),
            compute=self.reindexed,
        )


@dataclass(frozen=True)
class Sealing:
    """A service's sealed tables, by name."""

    tables: tuple[SealedTable, ...] = field(default_factory=tuple)

    def __init__(self, *tables: SealedTable):
        object.__setattr__(self, "tables", tuple(tables))

    def __getitem__(self, name: str) -> SealedTable:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(f"no sealed table {name!r}")

    def __iter__(self) -> Iterator[SealedTable]:
        return iter(self.tables)

    def derived(self) -> tuple[DerivedColumns, ...]:
        """Every table's blind indexes as shared/rekey.py `DerivedColumns`."""
        return tuple(d for d in (t.derived() for t in self.tables) if d is not None)
