"""Bulk referral import: a list of residents and their needs (CSV or .xlsx), a dry run first, then the real run.

One row is one resident with one or more needs (`TEMPLATE` is the shape, docs/api.md
describes it). Each row is validated as a referral posted one at a time is
(`ReferralIn`, every error naming its column), then:

- `accepted`: would be (dry run) or was taken;
- `possible-duplicate`: the same, linked to an open request of the same person
  (stored already, or on an earlier row of the file), as intake links any referral;
- `already-imported`: this row was imported before (a re-run of the file creates nothing);
- `out-of-area`: its postcode is outside Kent and Medway's postcode areas: not imported
  (pass it to the council it belongs to);
- `error`: not imported, each error with its column and the reason.

A re-run is harmless: each row's Idempotency-Key is made from its content
(`import:<sha256 of the row>`, one key space for every administrator), so a row
taken once is answered as taken, in this file or any later one. The file is read
as a stream (csv reader; openpyxl in read-only mode) and taken `BATCH` rows per
transaction (intake's group commit), with progress after each batch.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import IO

import orjson
from pydantic import ValidationError

from services.referrals import domain
from services.referrals.intake import Intake, _earlier_open_requests, _same_resident, take_referrals
from services.referrals.schemas import ReferralIn
from shared.audit import AuditLog
from shared.auth import Principal
from shared.errors import DomainError, ValidationFailed, field_errors
from shared.postcode import in_kent_and_medway_areas, normalise_postcode
from shared.uow import UnitOfWork

BATCH = 200
IMPORT_CLIENT = "bulk-import"
"""The Idempotency-Key space of imported rows: the same row is the same referral whoever uploads it."""

COLUMNS = (
    ("name", "yes", "The resident's full name", "Margaret Jones"),
    ("date_of_birth", "", "YYYY-MM-DD (or DD/MM/YYYY)", "1941-03-02"),
    ("phone", "", "UK or international number", "01843 577000"),
    ("email", "", "", ""),
    ("address_line1", "yes", "", "12 Northdown Road"),
    ("address_line2", "", "", ""),
    ("town", "", "", "Margate"),
    ("postcode", "yes", "A UK postcode in Kent or Medway", "CT9 2RN"),
    ("vulnerabilities", "", "Separated by ';': " + ", ".join(domain.VULNERABILITIES), "shielding;lives-alone"),
    ("contact_preference", "", ", ".join(domain.CONTACT_PREFERENCES), "phone"),
    ("language", "", "If not English", ""),
    ("needs", "yes", "Request types separated by ';' (GET /v1/request-types)", "food;prescription"),
    ("details", "", "What is needed, for every need of the row", "Weekly shop"),
    ("needed_by", "", "YYYY-MM-DD", ""),
    ("urgency", "", ", ".join(domain.URGENCIES) + " (from needed_by if empty)", ""),
    ("consent_to_share", "yes", "yes or no: may the resident's details be shared with the hub", "yes"),
    ("consent_given_by", "", "resident, referrer-on-behalf or best-interests", "best-interests"),
    ("channel", "", ", ".join(domain.CHANNELS) + " (default partner)", "partner"),
    ("referrer_name", "", "Who sent the list or referred the resident", "NHS shielded patient list"),
    ("referrer_organisation", "", "", "NHS Digital"),
)
"""(column, required, what it holds, an example): the template's header and its example row."""
NAMES = tuple(c[0] for c in COLUMNS)

# A ReferralIn field path -> the column it came from (the longest prefix wins).
_COLUMN_OF = {
    "resident.name": "name",
    "resident.date_of_birth": "date_of_birth",
    "resident.phone": "phone",
    "resident.email": "email",
    "resident.address.line1": "address_line1",
    "resident.address.line2": "address_line2",
    "resident.address.town": "town",
    "resident.address.postcode": "postcode",
    "resident.address": "postcode",
    "resident.vulnerabilities": "vulnerabilities",
    "resident.contact_preference": "contact_preference",
    "resident.language": "language",
    "requests": "needs",
    "requests.type": "needs",
    "requests.details": "details",
    "requests.needed_by": "needed_by",
    "requests.urgency": "urgency",
    "consent.to_share": "consent_to_share",
    "consent.given_by": "consent_given_by",
    "consent": "consent_to_share",
    "channel": "channel",
    "referrer.name": "referrer_name",
    "referrer.organisation": "referrer_organisation",
    "referrer": "referrer_name",
}


def template_csv() -> bytes:
    """The file to fill in: the header, then one example row."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(NAMES)
    writer.writerow([c[3] for c in COLUMNS])
    return out.getvalue().encode()


@dataclass
class RowReport:
    row: int
    """The row's number in the file (the header is row 1)."""
    status: str
    errors: list[dict] = field(default_factory=list)
    referral_id: str | None = None
    reference: str | None = None


@dataclass
class ImportReport:
    dry_run: bool
    rows: list[RowReport] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("accepted", "possible-duplicate", "already-imported", "out-of-area", "error"), 0)
        for row in self.rows:
            counts[row.status] += 1
        return counts

    @property
    def created(self) -> int:
        return 0 if self.dry_run else self.counts["accepted"] + self.counts["possible-duplicate"]

    def as_dict(self) -> dict:
        return {
            "dry_run": self.dry_run,
            "rows_read": len(self.rows),
            "created": self.created,
            "counts": self.counts,
            "rows": [{k: v for k, v in vars(r).items() if v not in (None, [])} for r in self.rows],
        }


# --- reading -----------------------------------------------------------------------------


def read_rows(stream: IO[bytes], *, filename: str | None) -> Iterator[tuple[int, dict[str, str]]]:
    """(row number, {column: text}) for each non-empty row, read as a stream; ValidationFailed for a bad header."""
    rows = _xlsx(stream) if (filename or "").lower().endswith((".xlsx", ".xlsm")) else _csv(stream)
    header = next(rows, None)
    if header is None:
        raise ValidationFailed([{"field": "file", "reason": "is empty"}])
    columns = [h.strip().lower().replace(" ", "_") for h in header]
    missing = [c[0] for c in COLUMNS if c[1] and c[0] not in columns]
    unknown = [c for c in columns if c and c not in NAMES]
    if missing or unknown:
        raise ValidationFailed(
            [{"field": name, "reason": "column is missing (GET /v1/referrals/imports/template)"} for name in missing]
            + [{"field": name, "reason": "is not a column of the template"} for name in unknown]
        )
    for number, cells in enumerate(rows, start=2):
        values = {name: (cells[i] if i < len(cells) else "").strip() for i, name in enumerate(columns) if name}
        if any(values.values()):
            yield number, values


def _csv(stream: IO[bytes]) -> Iterator[list[str]]:
    text = codecs.getreader("utf-8-sig")(stream, errors="replace")
    yield from csv.reader(text)


def _xlsx(stream: IO[bytes]) -> Iterator[list[str]]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(stream, read_only=True, data_only=True)
    except Exception:
        raise ValidationFailed([{"field": "file", "reason": "is not a readable .xlsx workbook"}]) from None
    try:
        for values in book.worksheets[0].iter_rows(values_only=True):
            yield [_cell(v) for v in values]
    finally:
        book.close()


def _cell(value) -> str:
    if value is None:
        return ""
    if hasattr(value, "date") and callable(value.date):  # a date cell comes as a datetime at midnight
        return value.date().isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _body(values: dict[str, str]) -> dict:
    """A row as the body of a referral posted on its own."""
    given = {k: v for k, v in values.items() if v}
    needs = [n.strip() for n in given.get("needs", "").split(";") if n.strip()]
    consent = given.get("consent_to_share", "").lower()
    body: dict = {
        "channel": given.get("channel", "partner"),
        "resident": {
            "name": given.get("name"),
            "address": {"line1": given.get("address_line1"), "postcode": given.get("postcode")},
            "vulnerabilities": [v.strip() for v in given.get("vulnerabilities", "").split(";") if v.strip()],
        },
        "consent": {
            "to_share": {"yes": True, "y": True, "true": True, "no": False, "n": False, "false": False}.get(
                consent, consent or None
            )
        },
        "requests": [
            {"type": need, **{k: given[k] for k in ("details", "needed_by", "urgency") if k in given}} for need in needs
        ],
    }
    for column, key in (
        ("date_of_birth", "date_of_birth"),
        ("phone", "phone"),
        ("email", "email"),
        ("contact_preference", "contact_preference"),
        ("language", "language"),
    ):
        if column in given:
            body["resident"][key] = _date(given[column]) if column == "date_of_birth" else given[column]
    for column, key in (("address_line2", "line2"), ("town", "town")):
        if column in given:
            body["resident"]["address"][key] = given[column]
    if "consent_given_by" in given:
        body["consent"]["given_by"] = given["consent_given_by"]
    if "referrer_name" in given or "referrer_organisation" in given:
        body["referrer"] = {
            "name": given.get("referrer_name") or given.get("referrer_organisation"),
            **({"organisation": given["referrer_organisation"]} if "referrer_organisation" in given else {}),
        }
    return body


def _date(text: str) -> str:
    day, sep, rest = text.partition("/")
    if sep:  # DD/MM/YYYY, as UK spreadsheets write it
        month, _, year = rest.partition("/")
        return f"{year}-{month.zfill(2)}-{day.zfill(2)}"
    return text


def _column(path: str) -> str:
    """The column a field error of the row's body is about ('requests[1].type' -> 'needs')."""
    plain = re.sub(r"\[\d+\]", "", path)
    while plain:
        if plain in _COLUMN_OF:
            return _COLUMN_OF[plain]
        plain = plain.rpartition(".")[0]
    return path


def row_key(values: dict[str, str]) -> str:
    """The row's Idempotency-Key: its content, column by column (the same row is the same referral)."""
    canonical = orjson.dumps({k: values.get(k, "") for k in NAMES}, option=orjson.OPT_SORT_KEYS)
    return "import:" + hashlib.sha256(canonical).hexdigest()


# --- running ---------------------------------------------------------------------------------


@dataclass
class _Row:
    number: int
    key: str
    referral: ReferralIn


def _checked(number: int, values: dict[str, str], known_types: frozenset[str]) -> _Row | RowReport:
    try:
        referral = ReferralIn.model_validate(_body(values), context={"request_types": known_types})
    except ValidationError as error:
        errors = [{"field": _column(e["field"]), "reason": e["reason"]} for e in field_errors(error.errors())]
        return RowReport(number, "error", errors=errors)
    if not in_kent_and_medway_areas(normalise_postcode(referral.resident.address.postcode)):
        return RowReport(
            number,
            "out-of-area",
            errors=[
                {"field": "postcode", "reason": "is outside Kent and Medway: pass the resident to their own council"}
            ],
        )
    return _Row(number, row_key(values), referral)


async def run(
    uow_factory: Callable[[], UnitOfWork],
    *,
    rows: Iterator[tuple[int, dict[str, str]]],
    by: Principal,
    dry_run: bool,
    known_types: frozenset[str],
    audit: AuditLog | None = None,
    request_id: str | None = None,
) -> AsyncIterator[tuple[int, ImportReport]]:
    """Check (dry run) or take the rows, `BATCH` at a time; yields (rows read so far, the report so far)."""
    report = ImportReport(dry_run=dry_run)
    read = 0
    seen = _Seen()  # rows of this file checked so far (a dry run's duplicates within the file)
    while True:
        batch = [_checked(number, values, known_types) for number, values in _take(rows, BATCH)]
        if not batch:
            return
        read += len(batch)
        valid = [r for r in batch if isinstance(r, _Row)]
        if dry_run:
            outcomes = await _would_be(uow_factory(), valid, seen)
        else:
            results = await take_referrals(
                uow_factory(),
                audit=audit,
                intakes=[
                    Intake(
                        r.referral, by, idempotency_key=r.key, idempotency_client=IMPORT_CLIENT, request_id=request_id
                    )
                    for r in valid
                ],
            )
            outcomes = [_taken(r.number, result) for r, result in zip(valid, results)]
        by_number = {o.row: o for o in outcomes}
        report.rows += [by_number[r.number] if isinstance(r, _Row) else r for r in batch]
        yield read, report


def _take(rows: Iterator, size: int) -> list:
    batch = []
    for item in rows:
        batch.append(item)
        if len(batch) == size:
            break
    return batch


def _taken(number: int, result) -> RowReport:
    if isinstance(result, DomainError):
        return RowReport(number, "error", errors=[{"field": "row", "reason": str(result)}])
    taken, replayed = result
    body = orjson.loads(taken.body)
    status = "already-imported" if replayed else "possible-duplicate" if body["possible_duplicate"] else "accepted"
    return RowReport(number, status, referral_id=taken.id, reference=body["reference"])


@dataclass
class _Seen:
    keys: set[str] = field(default_factory=set)
    by_name: dict[str, list[ReferralIn]] = field(default_factory=dict)


async def _would_be(uow: UnitOfWork, rows: list[_Row], seen: _Seen) -> list[RowReport]:
    """What the real run would answer for each row, storing nothing."""
    async with uow:
        stored = await uow.referrals.by_idempotency_keys({(IMPORT_CLIENT, r.key) for r in rows})
        earlier = await _earlier_open_requests(uow, [r.referral for r in rows])
    out = []
    for row, (open_before, _) in zip(rows, earlier):
        if (IMPORT_CLIENT, row.key) in stored:
            referral_id, _, _, reference = stored[(IMPORT_CLIENT, row.key)]
            out.append(RowReport(row.number, "already-imported", referral_id=referral_id, reference=reference))
            continue
        if row.key in seen.keys:  # the same row twice in the file: the real run takes it once
            out.append(RowReport(row.number, "already-imported"))
            continue
        asked = {r.type for r in row.referral.requests}
        same_name = seen.by_name.setdefault(domain.name_key(row.referral.resident.name), [])
        same_in_file = any(
            _same_resident(previous, row.referral) and asked & {r.type for r in previous.requests}
            for previous in same_name
        )
        seen.keys.add(row.key)
        same_name.append(row.referral)
        out.append(
            RowReport(row.number, "possible-duplicate" if same_in_file or asked & set(open_before) else "accepted")
        )
    return out


IMPORTER = Principal(subject="kent-together import-referrals", role="admin", scopes=frozenset())
"""Who takes the rows imported from the command line (the audit records say so)."""


def count_rows(path) -> int:
    """Rows below the header (for a progress bar): a quick pass over the file."""
    with open(path, "rb") as stream:
        return sum(1 for _ in read_rows(stream, filename=str(path)))


async def import_file(
    uow_factory: Callable[[], UnitOfWork],
    *,
    path,
    dry_run: bool,
    audit: AuditLog | None = None,
    on_progress: Callable[[int], None] = lambda read: None,
) -> ImportReport:
    """`kent-together import-referrals FILE [--dry-run]`: the file read as a stream, progress after each batch."""
    async with uow_factory() as uow:
        known_types = await uow.request_types.active()
    report = ImportReport(dry_run=dry_run)
    with open(path, "rb") as stream:
        async for read, report in run(  # noqa: B007 (the last report is the answer)
            uow_factory,
            rows=read_rows(stream, filename=str(path)),
            by=IMPORTER,
            dry_run=dry_run,
            known_types=known_types,
            audit=audit,
        ):
            on_progress(read)
    return report
