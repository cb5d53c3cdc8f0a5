"""Plan files in and out: the plan's own text, and the export's CSV and Excel layout. No I/O.

The export carries the plan's eight columns as the plan words them, so a file
exported, edited in a spreadsheet and imported again reads to the same actions
as the plan itself. The plan import ignores its tracking columns; the tracking
import (`read_tracking_file`) reads them back, by the export's 'Action id'.
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Literal

from services.actions.domain import DELIVERY_CONFIDENCE, RAGS, STATUSES, TRACKED_FIELDS
from services.actions.plan_file import ParsedPlan, RowError, clean_text, known_cell, parse_action_columns, parse_plan
from shared.errors import ValidationFailed

FileFormat = Literal["plan-text", "csv", "xlsx"]

# (heading, key in an action's view). The first eleven are the plan's own columns.
EXPORT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("Cell", "cell_name"),
    ("Theme", "theme"),
    ("Action No.", "number"),
    ("Action to be taken", "description"),
    ("Ongoing", "ongoing"),
    ("Mitigate or Opportunity", "kind_text"),
    ("Lead organisation or partnership", "lead_organisation_text"),
    ("Named Lead", "named_lead_text"),
    ("Timescale", "timescale_text"),
    ("Resources / capacity required", "resources"),
    ("Priority", "priority"),
    ("Title", "title"),
    ("Links to", "links_to"),
    ("Linked from", "linked_from"),
    ("Status", "status"),
    ("Blocked reason", "blocked_reason"),
    ("RAG", "rag"),
    ("RAG narrative", "rag_narrative"),
    ("Self rating", "self_rating"),
    ("Self rating commentary", "self_rating_commentary"),
    ("Independent rating", "independent_rating"),
    ("Independent rating commentary", "independent_rating_commentary"),
    ("Progress %", "progress"),
    ("Baseline due date", "baseline_due_date"),
    ("Agreed due date", "agreed_due_date"),
    ("Due date", "due_date"),
    ("Slippage (days)", "slippage_days"),
    ("Overdue", "overdue"),
    ("Last updated", "updated_at"),
    ("Action id", "id"),
)
HEADINGS = tuple(heading for heading, _ in EXPORT_COLUMNS)
_PLAN_HEADINGS = (
    "Action No.",
    "Action to be taken",
    "Mitigate or Opportunity",
    "Lead organisation or partnership",
    "Named Lead",
    "Timescale",
    "Resources / capacity required",
    "Priority",
)
_REQUIRED = ("Cell", *_PLAN_HEADINGS)
_YES, _NO = ("yes", "y", "true", "1"), ("no", "n", "false", "0", "")


@dataclass(frozen=True)
class PlanUpload:
    """A file as it was uploaded (a plan, or an edited export): its name says its format when it has one."""

    filename: str | None
    content: bytes


@dataclass(frozen=True)
class ReadFile:
    format: FileFormat
    plan: ParsedPlan


def unreadable(reason: str) -> ValidationFailed:
    return ValidationFailed([{"field": "file", "reason": reason}], detail="the file cannot be read")


# --- in -------------------------------------------------------------------------------------


def read_plan_file(*, filename: str | None, content: bytes) -> ReadFile:
    """The actions in an uploaded file, whichever of the three formats it is in."""
    name = (filename or "").lower()
    if name.endswith(".xls"):
        raise unreadable("old Excel (.xls) files are not read: save it as .xlsx")
    if content.startswith(b"PK\x03\x04") or name.endswith(".xlsx"):
        return ReadFile("xlsx", _read_table(_xlsx_rows(content)))
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise unreadable(f"not UTF-8 text (byte {error.start}); save it as UTF-8 or .xlsx") from None
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = "\t" if "\t" in first else ","
    if first.split(delimiter, 1)[0].strip().strip('"').lower() == "cell":
        return ReadFile("csv", _read_table(_csv_rows(text, delimiter=delimiter)))
    plan = parse_plan(text)
    if not plan.actions and not plan.errors:
        raise unreadable(
            "no actions found: expected the plan's tab-separated text, or a CSV or .xlsx file with the export's columns"
        )
    return ReadFile("plan-text", plan)


def _csv_rows(text: str, *, delimiter: str) -> list[tuple[int, list[str]]]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        return [(number, [_unescape(value) for value in row]) for number, row in enumerate(reader, start=1)]
    except csv.Error as error:
        raise unreadable(f"cannot read the CSV at record {reader.line_num}: {error}") from None


def _xlsx_rows(content: bytes) -> list[tuple[int, list[str]]]:
    from openpyxl import load_workbook
    from openpyxl.utils.exceptions import InvalidFileException

    try:
        workbook = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError, OSError, ValueError) as error:
        raise unreadable(f"not a readable .xlsx workbook ({type(error).__name__})") from None
    try:
        sheet = workbook["Actions"] if "Actions" in workbook.sheetnames else workbook.active
        return [
            (number, [_cell_text(value) for value in row])
            for number, row in enumerate(sheet.iter_rows(values_only=True), start=1)
        ]
    finally:
        workbook.close()


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == datetime.min.time() else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _read_table(rows: list[tuple[int, list[str]]]) -> ParsedPlan:
    """Actions from rows in the export's layout: a heading row, then one action a row."""
    rows = [(number, values) for number, values in rows if any(v.strip() for v in values)]
    if not rows:
        raise unreadable("the file is empty")
    _, headings = rows[0]
    position = {heading.strip().lower(): index for index, heading in enumerate(headings) if heading.strip()}
    missing = [heading for heading in _REQUIRED if heading.lower() not in position]
    if missing:
        raise unreadable(
            "missing the column" + ("s " if len(missing) > 1 else " ") + ", ".join(repr(m) for m in missing)
        )
    plan = ParsedPlan()
    seen: dict[tuple[str, int], int] = {}

    def column(values: list[str], heading: str) -> str:
        index = position.get(heading.lower())
        return values[index].strip() if index is not None and index < len(values) else ""

    for number, values in rows[1:]:
        cell = known_cell(column(values, "Cell"))
        if cell is None:
            plan.errors.append(RowError(number, None, f"'{column(values, 'Cell')}' is not one of the recovery cells"))
            continue
        ongoing = column(values, "Ongoing").lower()
        if ongoing not in _YES + _NO:
            plan.errors.append(RowError(number, cell, f"Ongoing is '{column(values, 'Ongoing')}': give Yes or No"))
            continue
        fields = [column(values, heading) for heading in _PLAN_HEADINGS]
        if ongoing in _YES:
            fields[1] = "[Ongoing] " + fields[1]
        theme = clean_text(column(values, "Theme")) or None
        action, reasons = parse_action_columns(fields, cell=cell, theme=theme, row=number)
        if action is not None and (cell, action.number) in seen:
            reasons.append(f"action {action.number} already appears at row {seen[cell, action.number]}")
        if reasons:
            plan.errors.extend(RowError(number, cell, reason) for reason in reasons)
            continue
        seen[cell, action.number] = number
        plan.actions.append(action)
    return plan


# --- out ------------------------------------------------------------------------------------


def export_rows(actions: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """One row per action in the export's layout, headings first."""
    return [list(HEADINGS), *([_export_value(key, action) for _, key in EXPORT_COLUMNS] for action in actions)]


def _export_value(key: str, action: Mapping[str, Any]) -> Any:
    value = action.get(key)
    if key in ("links_to", "linked_from"):
        return "; ".join(f"{link['cell_name']} {link['number']}" for link in value or [])
    if key == "priority":
        return value.capitalize()  # as the plan states it
    if isinstance(value, bool):
        return "Yes" if value else "No"
    return value


def to_csv(rows: list[list[Any]]) -> bytes:
    """UTF-8 with a byte order mark, so that Excel shows '£' and 'é' as they are."""
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    for row in rows:
        writer.writerow([_escape(value) if isinstance(value, str) else _plain(value) for value in row])
    return out.getvalue().encode("utf-8-sig")


def to_xlsx(rows: list[list[Any]], *, about: list[tuple[str, Any]]) -> bytes:
    """An 'Actions' sheet in the export's layout and an 'About' sheet saying what it holds."""
    from openpyxl import Workbook
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    from openpyxl.styles import Alignment, Font

    workbook = Workbook()
    sheet = workbook.active
    sheet.title = "Actions"
    for row in rows:
        sheet.append([ILLEGAL_CHARACTERS_RE.sub("", v) if isinstance(v, str) else _xlsx_value(v) for v in row])
    for cells in sheet.iter_rows(min_row=2):
        for cell in cells:
            if isinstance(cell.value, str):
                cell.data_type = "s"  # text, never a formula, whatever it starts with
                cell.alignment = Alignment(wrap_text=True, vertical="top")
            elif isinstance(cell.value, date):
                cell.number_format = "yyyy-mm-dd"
                cell.alignment = Alignment(vertical="top")
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    widths = {"Action to be taken": 70, "Title": 40, "RAG narrative": 40, "Resources / capacity required": 30}
    for index, heading in enumerate(rows[0], start=1):
        sheet.column_dimensions[sheet.cell(row=1, column=index).column_letter].width = widths.get(heading, 16)
    sheet.freeze_panes = "D2"
    sheet.auto_filter.ref = sheet.dimensions
    info = workbook.create_sheet("About")
    for label, value in about:
        info.append([label, _xlsx_value(value)])
    for cells in info.iter_rows():
        for cell in cells:
            if isinstance(cell.value, str):
                cell.data_type = "s"  # the filters echo the caller's query: text, never a formula
    info.column_dimensions["A"].width = 24
    info.column_dimensions["B"].width = 80
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def _xlsx_value(value: Any) -> Any:
    if isinstance(value, str):
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

        return ILLEGAL_CHARACTERS_RE.sub("", value)  # control characters a worksheet cannot hold
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)  # Excel has no time zones: the export states UTC
    return value


def _plain(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


# A cell starting with one of these is a formula to Excel: a quote mark keeps it text.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _escape(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_START) else value


def _unescape(value: str) -> str:
    return value[1:] if value.startswith("'") and value[1:].startswith(_FORMULA_START) else value


# --- tracking back in -------------------------------------------------------------------------

TRACKING_COLUMNS: tuple[tuple[str, str], ...] = tuple((h, key) for h, key in EXPORT_COLUMNS if key in TRACKED_FIELDS)
"""The export's columns a tracking import reads back: everything a recovery lead tracks. The plan's own columns
are the plan import's; the worked-out ones (due date, slippage, overdue) follow from these."""
HEADING_OF = {field: heading for heading, field in TRACKING_COLUMNS}


@dataclass(frozen=True)
class TrackingRow:
    """One row of an edited export: the action it names, the tracking it asks for, what cannot be read."""

    row: int
    action_id: str
    values: dict[str, Any]
    """Field -> value for every tracking column the file has (None: the cell is empty)."""
    last_updated: datetime | None
    """The action's 'Last updated' as exported: a change made after it is someone else's."""
    errors: list[tuple[str, str]]
    """(heading, reason) for each cell that cannot be read."""


def read_tracking_file(*, filename: str | None, content: bytes) -> tuple[FileFormat, list[TrackingRow]]:
    """The rows of an edited export (CSV or .xlsx), each naming its action by the export's 'Action id'."""
    name = (filename or "").lower()
    if name.endswith(".xls"):
        raise unreadable("old Excel (.xls) files are not read: save it as .xlsx")
    if content.startswith(b"PK\x03\x04") or name.endswith(".xlsx"):
        file_format, rows = "xlsx", _xlsx_rows(content)
    else:
        try:
            text = content.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise unreadable(f"not UTF-8 text (byte {error.start}); save it as UTF-8 or .xlsx") from None
        first = next((line for line in text.splitlines() if line.strip()), "")
        file_format, rows = "csv", _csv_rows(text, delimiter="\t" if "\t" in first else ",")
    rows = [(number, values) for number, values in rows if any(v.strip() for v in values)]
    if not rows:
        raise unreadable("the file is empty")
    _, headings = rows[0]
    position = {heading.strip().lower(): index for index, heading in enumerate(headings) if heading.strip()}
    if "action id" not in position:
        raise unreadable("missing the column 'Action id': import tracking from a file the export made")
    present = [(heading, field) for heading, field in TRACKING_COLUMNS if heading.lower() in position]
    if not present:
        raise unreadable("none of the tracking columns (" + ", ".join(h for h, _ in TRACKING_COLUMNS) + ") is there")

    def column(values: list[str], heading: str) -> str:
        index = position.get(heading.lower())
        return values[index].strip() if index is not None and index < len(values) else ""

    read = []
    for number, values in rows[1:]:
        errors: list[tuple[str, str]] = []
        parsed: dict[str, Any] = {}
        for heading, field in present:
            try:
                parsed[field] = _tracking_value(field, column(values, heading))
            except ValueError as error:
                errors.append((heading, str(error)))
        last_updated = None
        if column(values, "Last updated"):
            try:
                last_updated = _instant(column(values, "Last updated"))
            except ValueError:
                errors.append(
                    ("Last updated", f"'{column(values, 'Last updated')}' is not a time: leave it as exported")
                )
        read.append(TrackingRow(number, column(values, "Action id"), parsed, last_updated, errors))
    return file_format, read


def _tracking_value(field: str, text: str) -> Any:
    """A tracking cell as the API takes it; ValueError says why it cannot be."""
    if not text:
        return None
    choices = {
        "status": STATUSES,
        "rag": RAGS,
        "self_rating": DELIVERY_CONFIDENCE,
        "independent_rating": DELIVERY_CONFIDENCE,
    }.get(field)
    if choices:
        value = "-".join(text.lower().replace("/", " ").replace("-", " ").split())
        if value not in choices:
            raise ValueError(f"'{text}' is not one of " + ", ".join(choices))
        return value
    if field == "progress":
        digits = text.removesuffix("%").strip()
        try:
            number = float(digits)
        except ValueError:
            raise ValueError(f"'{text}' is not a number: give a whole number from 0 to 100") from None
        if not number.is_integer() or not 0 <= number <= 100:
            raise ValueError(f"'{text}' is not a whole number from 0 to 100")
        return int(number)
    if field == "agreed_due_date":
        return _day(text)
    return text.replace("\r\n", "\n")


def _day(text: str) -> date:
    """A date as a spreadsheet gives it: 2021-03-31 (as exported), or 31/03/2021 as Excel shows it in the UK."""
    try:
        return date.fromisoformat(text[:10])
    except ValueError:
        pass
    try:
        return datetime.strptime(text, "%d/%m/%Y").date()
    except ValueError:
        raise ValueError(f"'{text}' is not a date: give it as 2021-03-31 or 31/03/2021") from None


def _instant(text: str) -> datetime:

    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # the export's times are UTC
