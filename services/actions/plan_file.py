"""Read the Kent Resilience Forum recovery-cell action plans from their tab-separated text. No I/O."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Literal, NamedTuple

# The seven recovery cells of the KRF COVID-19 Recovery Strategy, in the plan's order.
RECOVERY_CELLS: dict[str, str] = {
    "Economy": "economy",
    "Infrastructure": "infrastructure",
    "Children and Young People": "children-and-young-people",
    "Health and Social Care": "health-and-social-care",
    "District and Communities": "district-and-communities",
    "Voluntary Sector": "voluntary-sector",
    "Finance": "finance",
}
PRIORITIES = ("Essential", "Important", "Desirable")

ActionKind = Literal["mitigate", "opportunity", "both"]
TimescaleBand = Literal["short", "medium", "longer"]

# Action No., Action to be taken, Mitigate or Opportunity, Lead organisation, Named Lead,
# Timescale, Resources / capacity required, Priority: the same order in every cell.
_COLUMNS = 8


class CrossReference(NamedTuple):
    """Another action the text points to, e.g. 'Also links to Infrastructure Action 27'."""

    cell: str  # the cell's slug
    number: int


@dataclass(frozen=True)
class ParsedAction:
    cell: str
    cell_slug: str
    number: int
    theme: str | None
    title: str
    description: str
    ongoing: bool
    kind: ActionKind
    kind_text: str
    lead_organisations: tuple[str, ...]
    lead_organisation_text: str
    named_leads: tuple[str, ...]
    named_lead_text: str
    timescale: TimescaleBand
    timescale_text: str
    resources: str
    priority: str
    cross_references: tuple[CrossReference, ...]
    row: int  # line of the file the action starts on


@dataclass(frozen=True)
class RowError:
    row: int  # line of the file the row starts on
    cell: str | None
    reason: str


@dataclass
class ParsedPlan:
    actions: list[ParsedAction] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


def parse_plan(text: str) -> ParsedPlan:
    """Every action of every cell in the plan's text, and every row that could not be read."""
    plan = ParsedPlan()
    cell: str | None = None
    theme: str | None = None
    seen: dict[tuple[str, int], int] = {}
    for row, fields, problem in _rows(text):
        if problem is not None:
            plan.errors.append(RowError(row, cell, problem))
            continue
        fields = [value.strip() for value in fields]
        if not any(fields):
            continue
        heading = _cell_heading(fields)
        if heading is not None:
            cell, theme = _known_cell(heading), None
            if cell is None:
                plan.errors.append(RowError(row, None, f"'{heading}' is not one of the recovery cells"))
            continue
        if fields[0].lower().startswith("action no"):
            continue  # each cell repeats the column headings, worded slightly differently
        if cell is None:
            # The title page and the contents table come before the first cell.
            if _looks_like_action_number(fields[0]):
                plan.errors.append(RowError(row, None, "action row outside any known recovery cell"))
            continue
        if fields[0] and not _looks_like_action_number(fields[0]) and not any(fields[1:]):
            theme = _clean_text(fields[0])  # Infrastructure groups its actions under theme rows
            continue
        action, reasons = _parse_action(fields, cell=cell, theme=theme, row=row)
        if action is not None and (cell, action.number) in seen:
            reasons.append(f"action {action.number} already appears at row {seen[cell, action.number]}")
        if reasons:
            plan.errors.extend(RowError(row, cell, reason) for reason in reasons)
            continue
        seen[cell, action.number] = row
        plan.actions.append(action)
    return plan


def parse_action_columns(
    fields: list[str], *, cell: str, theme: str | None, row: int
) -> tuple[ParsedAction | None, list[str]]:
    """One action from the plan's eight columns, read exactly as a row of the plan is.

    For files that carry the plan's columns in another layout (the export's CSV
    and Excel), so that they read to the same actions as the plan itself.
    """
    return _parse_action(fields, cell=cell, theme=theme, row=row)


def known_cell(name: str) -> str | None:
    """The recovery cell named (any dash, '&' or case; or its slug), as the plan names it."""
    return _known_cell(name) or next((cell for cell, slug in RECOVERY_CELLS.items() if slug == name.strip()), None)


def clean_text(value: str) -> str:
    """Text without HTML, one paragraph a line, bullets as '- '."""
    return _clean_text(value)


def _rows(text: str) -> Iterator[tuple[int, list[str], str | None]]:
    """(line the row starts on, fields, problem) for each tab-separated row; quoted cells may span lines."""
    lines = io.StringIO(text.removeprefix("\ufeff"), newline="").readlines()
    offset = 0
    while offset < len(lines):
        # strict, so that a stray quote mark is reported instead of swallowing the rows after it
        reader = csv.reader(lines[offset:], delimiter="\t", strict=True)
        start = offset + 1
        try:
            for fields in reader:
                yield start, fields, None
                start = offset + reader.line_num + 1
            return
        except csv.Error as error:
            yield start, [], f"cannot read the row ({error}): check its quote marks"
            offset = start  # read on from the line after the one the bad row starts on


_CELL_HEADING = re.compile(r"^(?P<cell>.+?)\s*[-–—]\s*Recovery Action Plan$", re.IGNORECASE)


def _cell_heading(fields: list[str]) -> str | None:
    if any(fields[1:]):
        return None
    match = _CELL_HEADING.match(fields[0])
    return match["cell"] if match else None


def _cell_key(name: str) -> str:
    return " ".join(name.lower().replace("&", " and ").split())


_CELLS_BY_KEY = {_cell_key(name): name for name in RECOVERY_CELLS}


def _known_cell(name: str) -> str | None:
    return _CELLS_BY_KEY.get(_cell_key(name))


_ACTION_NUMBER = re.compile(r"^\d+\.?$")


def _looks_like_action_number(value: str) -> bool:
    return bool(_ACTION_NUMBER.match(value))


def _parse_action(
    fields: list[str], *, cell: str, theme: str | None, row: int
) -> tuple[ParsedAction | None, list[str]]:
    """The action on one row, or None and the reasons it cannot be read."""
    if len(fields) < _COLUMNS or any(fields[_COLUMNS:]):
        return None, [f"expected {_COLUMNS} columns, found {len(fields)}"]
    (number_text, action_text, kind_text, organisations_text, leads_text, timescale_text, resources, priority) = (
        _clean_text(value) for value in fields[:_COLUMNS]
    )
    reasons = []
    if not _looks_like_action_number(number_text):
        reasons.append(f"action number '{number_text}' is not a whole number")
    ongoing, description = _without_ongoing_prefix(action_text)
    if not description:
        reasons.append("no action to be taken")
    kind = _kind(kind_text)
    if kind is None:
        reasons.append(f"'{kind_text}' is neither Mitigate nor Opportunity")
    timescale = _timescale(timescale_text)
    if timescale is None:
        reasons.append(f"timescale '{timescale_text}' is not Short, Medium or Longer Term")
    stated_priority = next((p for p in PRIORITIES if p.lower() == priority.lower()), None)
    if stated_priority is None:
        reasons.append(f"priority '{priority}' is not Essential, Important or Desirable")
    if reasons:
        return None, reasons
    return ParsedAction(
        cell=cell,
        cell_slug=RECOVERY_CELLS[cell],
        number=int(number_text.rstrip(".")),
        theme=theme,
        title=_title(description),
        description=description,
        ongoing=ongoing,
        kind=kind,
        kind_text=kind_text,
        lead_organisations=_lead_organisations(organisations_text),
        lead_organisation_text=organisations_text,
        named_leads=_named_leads(leads_text),
        named_lead_text=leads_text,
        timescale=timescale,
        timescale_text=timescale_text,
        resources=resources,
        priority=stated_priority,
        cross_references=_cross_references(
            " ".join([description, organisations_text, leads_text, resources]), cell=cell
        ),
        row=row,
    ), []


# --- text ---------------------------------------------------------------------------------


class _HtmlToText(HTMLParser):
    """Paragraphs and list items become lines; every other tag is dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("p", "div", "br", "ul", "ol"):
            self.parts.append("\n")
        elif tag == "li":
            self.parts.append("\n• ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "div", "ul", "ol", "li"):
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


# The plan's lists are '•' characters inside a <ul>, or ' - ' after a colon or a full stop.
_BULLET = re.compile(r"\s*•\s*|(?<=[:.])\s+-\s+(?=[A-Z])")
# A ballot box left over from a Word checklist (Health and Social Care action 15).
_STRAY_GLYPHS = str.maketrans("", "", "☐")


def _clean_text(value: str) -> str:
    """A cell's text without HTML: one paragraph a line, bullets as '- ', spaces tidied."""
    parser = _HtmlToText()
    parser.feed(value)
    parser.close()
    text = "".join(parser.parts).translate(_STRAY_GLYPHS)
    text = _BULLET.sub("\n- ", text)
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line and line != "-")


_ONGOING_PREFIX = re.compile(r"^[\[(]\s*on-?\s?going\s*[\])]\s*", re.IGNORECASE)


def _without_ongoing_prefix(text: str) -> tuple[bool, str]:
    """'[Ongoing] Consider how…' is an ongoing action whose text is 'Consider how…'."""
    match = _ONGOING_PREFIX.match(text)
    return (True, text[match.end() :]) if match else (False, text)


def _kind(text: str) -> ActionKind | None:
    """'Mitigate', 'Opportunity', or both in any of the plan's spellings ('Opportunity/ Mitigate')."""
    mitigate = "mitigat" in text.lower()
    opportunity = "opportunit" in text.lower()
    if mitigate and opportunity:
        return "both"
    if mitigate:
        return "mitigate"  # includes 'Mitigate future risks'
    if opportunity:
        return "opportunity"
    return None


_TIMESCALE = re.compile(r"^(?P<band>short|medium|longer|long)\b", re.IGNORECASE)


def _timescale(text: str) -> TimescaleBand | None:
    """'Short Term' (0–6 months), 'Medium Term' (6–12) or 'Longer Term' (12+)."""
    match = _TIMESCALE.match(text)
    if match is None:
        return None
    band = match["band"].lower()
    return "longer" if band == "long" else band


_TITLE_MAX = 120
_HEADING_LEAD_IN = re.compile(r"^(?P<heading>[^:.]+):\s")  # 'Funding: Funders, including…'
_DANGLING_WORD = re.compile(r"\b(?:for|to|of|on|and|with|through|the|a)$")
# A sentence ends at a full stop before a capital, but not at 'e.g.' or 'i.e.'.
_SENTENCE_END = re.compile(r"(?<![eE]\.g\.)(?<![iI]\.e\.)(?<=[.!?])\s+(?=[A-Z(])")


def _title(description: str) -> str:
    """A short name for the action: its heading if the plan gives one, else its first sentence."""
    first, _, rest = description.partition("\n")
    if rest and not rest.startswith("- ") and len(first) <= _TITLE_MAX:
        return first  # a heading paragraph, as in the Children and Young People plan
    lead_in = _HEADING_LEAD_IN.match(first)
    if lead_in and len(lead_in["heading"]) <= _TITLE_MAX and not _DANGLING_WORD.search(lead_in["heading"]):
        return lead_in["heading"]  # as in the Voluntary Sector and Finance plans
    title = _SENTENCE_END.split(first, maxsplit=1)[0].rstrip(".:")
    # 'Work with Housing authorities to' introduces a list: say that it goes on
    return f"{title} …" if _DANGLING_WORD.search(title) else title


# --- leads --------------------------------------------------------------------------------


def _split_outside_brackets(text: str, separator: str) -> list[str]:
    """Split where the separator is outside (…) and […]: '(KHOG, HHSCG and … [KPSHG])' stays whole."""
    pieces, start = [], 0
    for match in re.finditer(separator, text):
        before = text[start : match.start()]
        if before.count("(") + before.count("[") > before.count(")") + before.count("]"):
            continue
        pieces.append(before)
        start = match.end()
    return [*pieces, text[start:]]


# '/', ';', ':' and ',' separate partners, but 'District / Borough' councils are one kind of partner.
_ORGANISATION_SEPARATOR = r"\s*/(?!\s*Boroughs?\b)\s*|\s*[;:,]\s*"
_REFERENCE_PREFIX = re.compile(r"^(?:links? to|cross reference to)\s+", re.IGNORECASE)


def _lead_organisations(text: str) -> tuple[str, ...]:
    """The partners the plan names as leads, one entry each, as the plan words them."""
    organisations = []
    for entry in _split_outside_brackets(text, _ORGANISATION_SEPARATOR):
        entry = _REFERENCE_PREFIX.sub("", entry.strip(" &.")).strip()
        if entry:
            organisations.append(entry)
    return tuple(organisations)


_BRACKETED = re.compile(r"\s*[(\[][^)\]]*[)\]]")
# '… as KCC leads', '… to liaise with relevant officers', '…, with actions sequential to …'
_QUALIFIER = re.compile(r"\s+(?:as\s|to\s+[a-z]|with\s+[a-z]).*?(?=[,/;]|$)")
_PLACEHOLDER = re.compile(r"\b(?:n/a|tbc|tba)\b", re.IGNORECASE)
# Between leads: '/', ';', and '&' before another 'Name Name –' ('Chair of KDG & Brian Horton - SELEP').
_LEAD_SEPARATOR = r"\s*[/;]\s*|\s*&\s*(?=[A-Z][a-z]+\s+[A-Z][a-z]+\s*[-–])"
_ROLE_DASH = re.compile(r"\s[-–]|[-–]\s")  # 'Nick Fenton – Chair of KDG', 'Sarah Nurden- Strategic…'
_PEOPLE_SEPARATOR = r"\s*,\s*|\s+and\s+|\s+working with\s+|\s*&\s*"
_NAME_WORD = re.compile(r"^(?:Mc|O')?[A-Z][a-z]+(?:-[A-Z][a-z]+)?$")
# Words that begin organisations ('Kent County Council') and words that end organisations or job
# titles ('Ashford Volunteer Centre', 'School Improvement Teams'): never part of a person's name.
_PLACES = {"Kent", "Medway", "Ashford"}
_ORGANISATION_ENDINGS = {
    "Board",
    "Boards",
    "Centre",
    "Council",
    "Foundation",
    "Group",
    "Manager",
    "Officer",
    "Officers",
    "Partnership",
    "Planner",
    "Teams",
}


def _named_leads(text: str) -> tuple[str, ...]:
    """The people the plan names as leads, without their job titles, organisations or 'tbc'."""
    text = _QUALIFIER.sub("", _BRACKETED.sub("", text))
    # Where leads are split by '/', a comma starts a job title ('Tim Read, Head of Transportation');
    # elsewhere commas separate people ('Sarah Hammond, Lee-Anne Farach').
    comma_starts_role = "/" in _PLACEHOLDER.sub("", text)
    people: list[str] = []
    for entry in re.split(_LEAD_SEPARATOR, text):
        if _PLACEHOLDER.search(entry):
            continue
        entry = _ROLE_DASH.split(entry, maxsplit=1)[0]
        if comma_starts_role:
            entry = entry.split(",", 1)[0]
        for piece in re.split(_PEOPLE_SEPARATOR, entry):
            people.extend(_people_in(piece.split()))
    return tuple(dict.fromkeys(people))


def _people_in(words: list[str]) -> list[str]:
    """Runs of two to four capitalised words that are not an organisation ('DCRC Sam Sheppard')."""
    people, run = [], []
    for word in [*words, ""]:
        if _NAME_WORD.match(word) and word not in _PLACES and word not in _ORGANISATION_ENDINGS:
            run.append(word)
            continue
        if 2 <= len(run) <= 4 and word not in _ORGANISATION_ENDINGS:
            # four words are two people whose separator the plan lost: 'Amanda Beer William Benson'
            people.extend([" ".join(run)] if len(run) < 4 else [" ".join(run[:2]), " ".join(run[2:])])
        run = []
    return people


# --- cross references ---------------------------------------------------------------------

_CELL_NAMES = "|".join(name.replace(" and ", " (?:and|&) ").replace(" ", r"\s+") for name in RECOVERY_CELLS)
_NUMBERS = r"(?P<numbers>\d+(?:\s*(?:,|and|&)\s*\d+)*)"
_OTHER_CELL_ACTION = re.compile(
    rf"\b(?P<cell>{_CELL_NAMES})(?:\s+Recovery)?(?:\s+Cell)?\s+Actions?\s+{_NUMBERS}", re.IGNORECASE
)
_SAME_CELL_ACTION = re.compile(rf"\bActions?\s+{_NUMBERS}\s+(?:above|below)\b", re.IGNORECASE)


def _cross_references(text: str, *, cell: str) -> tuple[CrossReference, ...]:
    """'Also links to Infrastructure Action 27', 'Infrastructure Cell Action 3', 'Actions 7 and 8 above'."""
    references = []
    for match in _OTHER_CELL_ACTION.finditer(text):
        slug = RECOVERY_CELLS[_known_cell(match["cell"])]
        references.extend(CrossReference(slug, int(n)) for n in re.findall(r"\d+", match["numbers"]))
    for match in _SAME_CELL_ACTION.finditer(text):
        slug = RECOVERY_CELLS[cell]
        references.extend(CrossReference(slug, int(n)) for n in re.findall(r"\d+", match["numbers"]))
    return tuple(dict.fromkeys(references))
