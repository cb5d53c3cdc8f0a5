"""A small, safe OData v4 `$filter` / `$orderby` / `$select` reader over whitelisted columns.

A tokenizer and a recursive-descent parser turn the expression into SQLAlchemy
expressions with bound parameters: no text of the caller's ever reaches SQL.
Anything else is an `ODataError` (a 400 naming the option and the reason).

It reads what Power Query folds a filter into (OData.Feed, Power BI and Excel):
`tolower`/`toupper`/`trim`/`length`, `year`/`month`/`day`/`hour`/`minute`/`second`/`date`,
`contains`/`startswith`/`endswith` alone or `… eq true`, `in (…)`, a bare
boolean property, and a decimal compared with a whole-number property.

    or_expr   := and_expr ("or" and_expr)*
    and_expr  := not_expr ("and" not_expr)*
    not_expr  := "not" not_expr | condition
    condition := value (("eq"|"ne"|"gt"|"ge"|"lt"|"le") value | "in" "(" value ("," value)* ")")?
                 (without a comparison the value must be a boolean)
    value     := "(" or_expr ")" | function "(" value ("," value)* ")" | property | literal
"""

from __future__ import annotations

import base64
import operator
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime

import orjson
from sqlalchemy import Column, Date, Integer, and_, cast, extract, false, func, not_, or_, true
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement

from shared.errors import DomainError

MAX_FILTER_LENGTH = 2000
MAX_DEPTH = 40
MAX_IN_VALUES = 200


class ODataError(DomainError):
    slug, title = "invalid-query-option", "Invalid OData query option"

    def __init__(self, option: str, reason: str):
        super().__init__(f"{option}: {reason}", errors=[{"field": option, "reason": reason, "in": "query"}])


@dataclass(frozen=True)
class Property:
    """A column the feed exposes: its OData name and EDM type."""

    name: str
    column: Column
    edm: str  # Edm.String, Edm.Int64, Edm.Boolean, Edm.Date, Edm.DateTimeOffset


@dataclass(frozen=True)
class Expr:
    """A typed SQL expression: a property, a function of one, or a condition (Edm.Boolean)."""

    sql: ColumnElement
    edm: str
    name: str


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[mMdDfFlL]?(?![A-Za-z0-9_]))
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<comma>,)
    """,
    re.VERBOSE,
)
COMPARE = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
COMPARISONS = set(COMPARE)
TEXT_TESTS = {"contains", "startswith", "endswith"}
TEXT_CHANGES = {"tolower": func.lower, "toupper": func.upper, "trim": func.trim}
DATE_PARTS = {"year", "month", "day", "hour", "minute", "second"}
FUNCTIONS = TEXT_TESTS | set(TEXT_CHANGES) | DATE_PARTS | {"length", "date"}
"""What `Org.OData.Capabilities.V1.FilterFunctions` lists in $metadata."""
KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"} | COMPARISONS | FUNCTIONS
NUMBERS = ("Edm.Int64", "Edm.Int32", "Edm.Double", "Edm.Decimal")
DATES = ("Edm.Date", "Edm.DateTimeOffset")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    position: int


def tokenize(text: str) -> list[Token]:
    if len(text) > MAX_FILTER_LENGTH:
        raise ODataError("$filter", f"longer than {MAX_FILTER_LENGTH} characters")
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise ODataError("$filter", f"unexpected character {text[position]!r} at position {position + 1}")
        kind = match.lastgroup
        assert kind is not None  # every alternative of _TOKEN is a named group
        if kind != "space":
            tokens.append(Token(kind, match.group(), position + 1))
        position = match.end()
    return tokens


@dataclass(frozen=True)
class Literal:
    value: object
    kind: str  # string, number, date, datetime, boolean, null


class FilterParser:
    def __init__(self, text: str, properties: dict[str, Property]):
        self.tokens = tokenize(text)
        self.properties = properties
        self.index = 0
        self.depth = 0

    def parse(self) -> ColumnElement:
        if not self.tokens:
            raise ODataError("$filter", "is empty")
        expression = self.or_expr()
        if self.index < len(self.tokens):
            token = self.tokens[self.index]
            raise ODataError("$filter", f"unexpected {token.text!r} at position {token.position}")
        return expression

    # helpers

    def peek(self, ahead: int = 0) -> Token | None:
        at = self.index + ahead
        return self.tokens[at] if at < len(self.tokens) else None

    def at(self, kind: str) -> bool:
        """Whether the next token is of this kind."""
        token = self.peek()
        return token is not None and token.kind == kind

    def take(self, kind: str | None = None, text: str | None = None) -> Token:
        token = self.peek()
        if token is None:
            raise ODataError("$filter", f"ends early: expected {text or kind}")
        if (kind and token.kind != kind) or (text and token.text.lower() != text):
            raise ODataError("$filter", f"expected {text or kind} at position {token.position}, found {token.text!r}")
        self.index += 1
        return token

    def at_word(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "name" and token.text.lower() in words

    def deeper(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ODataError("$filter", f"nested deeper than {MAX_DEPTH}")

    # grammar

    def or_expr(self) -> ColumnElement:
        self.deeper()
        parts = [self.and_expr()]
        while self.at_word("or"):
            self.index += 1
            parts.append(self.and_expr())
        self.depth -= 1
        return parts[0] if len(parts) == 1 else or_(*parts)

    def and_expr(self) -> ColumnElement:
        parts = [self.not_expr()]
        while self.at_word("and"):
            self.index += 1
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else and_(*parts)

    def not_expr(self) -> ColumnElement:
        if self.at_word("not"):
            self.index += 1
            self.deeper()
            inner = self.not_expr()
            self.depth -= 1
            return not_(inner)
        return self.condition()

    def condition(self) -> ColumnElement:
        if self.peek() is None:
            raise ODataError("$filter", "ends early: expected a condition")
        left = self.value()
        if self.at_word("in"):
            self.index += 1
            return self.membership(left)
        following = self.peek()
        if following is not None and following.kind == "name" and following.text.lower() in COMPARISONS:
            self.index += 1
            return self.compare(left, following.text.lower(), self.value())
        if isinstance(left, Expr) and left.edm == "Edm.Boolean":
            return _as_condition(left)
        where = f"at position {following.position}, found {following.text!r}" if following else "at the end"
        raise ODataError("$filter", f"expected a comparison (eq, ne, gt, ge, lt, le, in) {where}")

    def value(self) -> Expr | Literal:
        token = self.peek()
        if token is None:
            raise ODataError("$filter", "ends early: expected a property or a value")
        if token.kind == "open":
            self.index += 1
            inner = self.or_expr()
            self.take("close")
            return Expr(inner, "Edm.Boolean", "(…)")
        if (
            token.kind == "name"
            and token.text.lower() in FUNCTIONS
            and (following := self.peek(1)) is not None
            and following.kind == "open"
        ):
            return self.function()
        return self.operand()

    def function(self) -> Expr:
        name = self.take("name").text.lower()
        self.take("open")
        self.deeper()
        arguments = [self.value()]
        while self.at("comma"):
            self.index += 1
            arguments.append(self.value())
        self.take("close")
        self.depth -= 1
        target = arguments[0]
        if name in TEXT_TESTS:
            if len(arguments) != 2:
                raise ODataError("$filter", f"{name}() takes a text property and a quoted text")
            argument = arguments[1]
            if not isinstance(target, Expr) or target.edm != "Edm.String":
                raise ODataError("$filter", f"{name}() needs a text property first")
            if not isinstance(argument, Literal) or argument.kind != "string":
                raise ODataError("$filter", f"{name}() needs a quoted text second")
            escaped = str(argument.value).replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = {"contains": f"%{escaped}%", "startswith": f"{escaped}%", "endswith": f"%{escaped}"}[name]
            return Expr(target.sql.like(pattern, escape="\\"), "Edm.Boolean", f"{name}({target.name})")
        if len(arguments) != 1 or not isinstance(target, Expr):
            raise ODataError("$filter", f"{name}() takes one property")
        if name in TEXT_CHANGES or name == "length":
            if target.edm != "Edm.String":
                raise ODataError("$filter", f"{name}() needs a text property")
            if name == "length":
                return Expr(func.length(target.sql), "Edm.Int32", f"length({target.name})")
            return Expr(TEXT_CHANGES[name](target.sql), "Edm.String", f"{name}({target.name})")
        if target.edm not in DATES or (name in ("hour", "minute", "second") and target.edm == "Edm.Date"):
            raise ODataError(
                "$filter",
                f"{name}() needs a {'date and time' if name in ('hour', 'minute', 'second') else 'date'} property",
            )
        if name == "date":
            return Expr(
                cast(target.sql, Date) if target.edm == "Edm.DateTimeOffset" else target.sql,
                "Edm.Date",
                f"date({target.name})",
            )
        return Expr(utc_part(name, target.sql), "Edm.Int32", f"{name}({target.name})")

    def operand(self) -> Expr | Literal:
        token = self.take()
        if token.kind == "string":
            return Literal(token.text[1:-1].replace("''", "'"), "string")
        if token.kind == "number":
            text = token.text.rstrip("mMdDfFlL")
            if any(c in text for c in ".eE"):
                return Literal(float(text), "number")
            return Literal(int(text), "number")
        if token.kind == "date":
            try:
                return Literal(date.fromisoformat(token.text), "date")
            except ValueError:
                raise ODataError("$filter", f"{token.text} is not a date") from None
        if token.kind == "datetime":
            return Literal(_datetime(token.text), "datetime")
        if token.kind == "name":
            word = token.text.lower()
            if word in ("true", "false"):
                return Literal(word == "true", "boolean")
            if word == "null":
                return Literal(None, "null")
            if token.text in self.properties:
                prop = self.properties[token.text]
                return Expr(prop.column, prop.edm, prop.name)
            raise ODataError("$filter", f"unknown property {token.text!r}; one of {', '.join(self.properties)}")
        raise ODataError(
            "$filter", f"expected a property or a value at position {token.position}, found {token.text!r}"
        )

    def membership(self, left) -> ColumnElement:
        if not isinstance(left, Expr):
            raise ODataError("$filter", "in needs a property on its left")
        self.take("open")
        values = [self.operand()]
        while self.at("comma"):
            self.index += 1
            values.append(self.operand())
            if len(values) > MAX_IN_VALUES:
                raise ODataError("$filter", f"in takes at most {MAX_IN_VALUES} values")
        self.take("close")
        literals = [v for v in values if isinstance(v, Literal) and v.kind != "null"]
        if len(literals) != len(values):
            raise ODataError("$filter", "in takes values, not properties or null")
        return left.sql.in_([_coerce(left, v) for v in literals])

    def compare(self, left, operator: str, right) -> ColumnElement:
        if isinstance(left, Literal) and isinstance(right, Expr):
            left, right = right, left
            operator = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}.get(operator, operator)
        if not isinstance(left, Expr):
            raise ODataError("$filter", "a comparison needs a property on one side")
        if isinstance(right, Expr):
            raise ODataError("$filter", "comparing two properties is not supported")
        if right.kind == "null":
            if operator == "eq":
                return left.sql.is_(None)
            if operator == "ne":
                return left.sql.is_not(None)
            raise ODataError("$filter", f"null can only be compared with eq or ne, not {operator}")
        value = _coerce(left, right)
        if left.edm == "Edm.Boolean":
            if operator not in ("eq", "ne"):
                raise ODataError("$filter", f"{left.name} is true or false: compare it with eq or ne, not {operator}")
            if not isinstance(left.sql, Column):
                # A condition (`startswith(…) eq true`): the condition itself, or its negation.
                wanted = value if operator == "eq" else not value
                return _as_condition(left) if wanted else not_(_as_condition(left))
        return COMPARE[operator](left.sql, value)


class utc_part(ColumnElement):
    """`year(received_at)` and the like, in UTC as the feed's values are, whatever the session's time zone."""

    inherit_cache = True
    type = Integer()

    def __init__(self, part: str, value):
        self.part, self.value = part, value


@compiles(utc_part)
def _utc_part(element, compiler, **kw):
    return compiler.process(cast(extract(element.part, element.value), Integer()), **kw)


@compiles(utc_part, "postgresql")
def _utc_part_postgresql(element, compiler, **kw):
    at_utc = func.timezone("UTC", element.value) if not isinstance(element.value.type, Date) else element.value
    return compiler.process(cast(extract(element.part, at_utc), Integer()), **kw)


def _as_condition(expr: Expr) -> ColumnElement:
    """A boolean property as a condition (`triaged` alone means `triaged eq true`)."""
    return expr.sql == true() if isinstance(expr.sql, Column) else expr.sql


def _datetime(text: str) -> datetime:
    # Power Query writes seven fractional digits (.0000000); Python reads at most six.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text.replace("Z", "+00:00"))
    try:
        return datetime.fromisoformat(text).astimezone(UTC)
    except ValueError:
        raise ODataError("$filter", f"{text} is not a date and time") from None


def _coerce(prop: Expr, literal: Literal):
    expected = {
        "Edm.String": ("string",),
        "Edm.Int64": ("number",),
        "Edm.Int32": ("number",),
        "Edm.Boolean": ("boolean",),
        "Edm.Date": ("date",),
        "Edm.DateTimeOffset": ("datetime", "date"),
        "Edm.Double": ("number",),
    }[prop.edm]
    if literal.kind not in expected:
        raise ODataError(
            "$filter", f"{prop.name} is {prop.edm}; {literal.kind} {literal.value!r} does not compare with it"
        )
    if prop.edm in ("Edm.Int64", "Edm.Int32") and isinstance(literal.value, float) and literal.value.is_integer():
        return int(literal.value)  # 5.0 from a decimal column in Power Query: the whole number 5
    if prop.edm == "Edm.DateTimeOffset" and literal.kind == "date" and isinstance(literal.value, date):
        return datetime(literal.value.year, literal.value.month, literal.value.day, tzinfo=UTC)
    return literal.value


def parse_filter(text: str, properties: dict[str, Property]) -> ColumnElement:
    """`$filter` as a SQLAlchemy condition over `properties`; ODataError if it is not one."""
    return FilterParser(text, properties).parse()


def parse_orderby(text: str, properties: dict[str, Property]) -> list[tuple[Property, bool]]:
    """`$orderby=a desc,b` as [(property, descending)]."""
    result = []
    for part in text.split(","):
        words = part.split()
        if not words or len(words) > 2:
            raise ODataError("$orderby", f"{part.strip()!r} is not `property [asc|desc]`")
        if words[0] not in properties:
            raise ODataError("$orderby", f"unknown property {words[0]!r}; one of {', '.join(properties)}")
        direction = words[1].lower() if len(words) == 2 else "asc"
        if direction not in ("asc", "desc"):
            raise ODataError("$orderby", f"direction must be asc or desc, not {words[1]!r}")
        result.append((properties[words[0]], direction == "desc"))
    return result


def parse_select(text: str, properties: dict[str, Property]) -> list[Property]:
    names = [name.strip() for name in text.split(",")]
    if names == ["*"]:
        return list(properties.values())
    unknown = [name for name in names if name not in properties]
    if unknown:
        raise ODataError("$select", f"unknown property {unknown[0]!r}; one of {', '.join(properties)}")
    return [properties[name] for name in dict.fromkeys(names)]


def parse_count(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    if not value.isdigit() or len(value) > 9:
        raise ODataError(option, "must be a whole number, 0 or more")
    return int(value)


# Keyset paging: `$skiptoken` names the last row sent, not how many rows came before it. A row
# written or removed while a client pages (the projection never stops) moves nothing: no row is
# sent twice or skipped because another came in ahead of it, and every page costs the same.


@dataclass(frozen=True)
class SkipToken:
    after: list
    """The last row's values of the order's properties."""
    remaining: int | None
    """What is left of the client's `$top`."""


def encode_skiptoken(*, order: list[tuple[Property, bool]], row: dict, remaining: int | None) -> str:
    values = [_token_value(row[p.name]) for p, _ in order]
    raw = orjson.dumps({"o": _order_signature(order), "a": values, "r": remaining})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_skiptoken(text: str, *, order: list[tuple[Property, bool]]) -> SkipToken:
    try:
        raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        values, remaining = raw["a"], raw["r"]
        if raw["o"] != _order_signature(order) or not isinstance(values, list) or len(values) != len(order):
            raise ValueError("for another order")
        if remaining is not None and (not isinstance(remaining, int) or remaining < 0):
            raise ValueError("bad remaining")
        after = [_from_token(p, v) for (p, _), v in zip(order, values)]
    except (ValueError, TypeError, KeyError, orjson.JSONDecodeError):
        raise ODataError(
            "$skiptoken", "not one this feed gave for this query: follow @odata.nextLink as it is"
        ) from None
    return SkipToken(after=after, remaining=remaining)


def after_row(order: list[tuple[Property, bool]], values: list) -> ColumnElement:
    """The rows after `values` in `order` (NULLs last in both directions, as `order_by_clause` sorts them)."""
    alternatives = []
    for i, ((prop, descending), value) in enumerate(zip(order, values)):
        same_before = [p.column.is_(None) if v is None else p.column == v for (p, _), v in zip(order[:i], values[:i])]
        if value is None:
            continue  # nothing sorts after NULL in this column: only a later column can decide
        beyond = prop.column < value if descending else prop.column > value
        alternatives.append(and_(*same_before, or_(beyond, prop.column.is_(None))))
    return or_(*alternatives) if alternatives else false()


def order_by_clause(order: list[tuple[Property, bool]]) -> list:
    return [(p.column.desc() if descending else p.column.asc()).nulls_last() for p, descending in order]


def _order_signature(order) -> str:
    return ",".join(f"{p.name}{' desc' if d else ''}" for p, d in order)


def _token_value(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    return value


def _from_token(prop: Property, value):
    if value is None:
        return None
    if prop.edm == "Edm.DateTimeOffset":
        return datetime.fromisoformat(value).astimezone(UTC)
    if prop.edm == "Edm.Date":
        return date.fromisoformat(value)
    if prop.edm in ("Edm.Int64", "Edm.Int32"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError("not a whole number")
        return value
    if prop.edm == "Edm.Boolean":
        if not isinstance(value, bool):
            raise ValueError("not a boolean")
        return value
    if not isinstance(value, str):
        raise ValueError("not text")
    return value


__all__ = [
    "ODataError",
    "Property",
    "SkipToken",
    "after_row",
    "decode_skiptoken",
    "encode_skiptoken",
    "order_by_clause",
    "parse_count",
    "parse_filter",
    "parse_orderby",
    "parse_select",
    "tokenize",
]
