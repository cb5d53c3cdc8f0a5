"""A small, safe OData v4 `$filter` / `$orderby` / `$select` reader over whitelisted columns.

A tokenizer and a recursive-descent parser turn the expression into SQLAlchemy
expressions with bound parameters: no text of the caller's ever reaches SQL.
Anything else is an `ODataError` (a 400 naming the option and the reason).

    or_expr   := and_expr ("or" and_expr)*
    and_expr  := not_expr ("and" not_expr)*
    not_expr  := "not" not_expr | primary
    primary   := "(" or_expr ")" | function | comparison
    function  := ("contains"|"startswith"|"endswith") "(" property "," string ")"
    comparison:= operand ("eq"|"ne"|"gt"|"ge"|"lt"|"le") operand
    operand   := property | literal
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone

from sqlalchemy import Column, and_, not_, or_
from sqlalchemy.sql.elements import ColumnElement

from shared.errors import DomainError

MAX_FILTER_LENGTH = 2000
MAX_DEPTH = 40


class ODataError(DomainError):
    status, slug, title = 400, "invalid-query-option", "Invalid OData query option"

    def __init__(self, option: str, reason: str):
        super().__init__(f"{option}: {reason}", errors=[{"field": option, "reason": reason, "in": "query"}])


@dataclass(frozen=True)
class Property:
    """A column the feed exposes: its OData name and EDM type."""

    name: str
    column: Column
    edm: str  # Edm.String, Edm.Int64, Edm.Boolean, Edm.Date, Edm.DateTimeOffset


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2})
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<comma>,)
    """,
    re.VERBOSE,
)
COMPARE = {"eq": operator.eq, "ne": operator.ne, "gt": operator.gt, "ge": operator.ge, "lt": operator.lt,
           "le": operator.le}
COMPARISONS = set(COMPARE)
FUNCTIONS = {"contains", "startswith", "endswith"}
KEYWORDS = {"and", "or", "not", "true", "false", "null"} | COMPARISONS | FUNCTIONS


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

    def peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

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

    # grammar

    def or_expr(self) -> ColumnElement:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ODataError("$filter", f"nested deeper than {MAX_DEPTH}")
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
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ODataError("$filter", f"nested deeper than {MAX_DEPTH}")
            inner = self.not_expr()
            self.depth -= 1
            return not_(inner)
        return self.primary()

    def primary(self) -> ColumnElement:
        token = self.peek()
        if token is None:
            raise ODataError("$filter", "ends early: expected a condition")
        if token.kind == "open":
            self.index += 1
            inner = self.or_expr()
            self.take("close")
            return inner
        if token.kind == "name" and token.text.lower() in FUNCTIONS:
            return self.function()
        left = self.operand()
        operator = self.peek()
        if operator is None or operator.kind != "name" or operator.text.lower() not in COMPARISONS:
            where = f"at position {operator.position}, found {operator.text!r}" if operator else "at the end"
            raise ODataError("$filter", f"expected a comparison (eq, ne, gt, ge, lt, le) {where}")
        self.index += 1
        right = self.operand()
        return self.compare(left, operator.text.lower(), right)

    def function(self) -> ColumnElement:
        name = self.take("name").text.lower()
        self.take("open")
        target = self.operand()
        self.take("comma")
        argument = self.operand()
        self.take("close")
        if not isinstance(target, Property) or target.edm != "Edm.String":
            raise ODataError("$filter", f"{name}() needs a text property first")
        if not isinstance(argument, Literal) or argument.kind != "string":
            raise ODataError("$filter", f"{name}() needs a quoted text second")
        text = str(argument.value)
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = {"contains": f"%{escaped}%", "startswith": f"{escaped}%", "endswith": f"%{escaped}"}[name]
        return target.column.like(pattern, escape="\\")

    def operand(self) -> Property | Literal:
        token = self.take()
        if token.kind == "string":
            return Literal(token.text[1:-1].replace("''", "'"), "string")
        if token.kind == "number":
            return Literal(float(token.text) if "." in token.text else int(token.text), "number")
        if token.kind == "date":
            try:
                return Literal(date.fromisoformat(token.text), "date")
            except ValueError:
                raise ODataError("$filter", f"{token.text} is not a date") from None
        if token.kind == "datetime":
            try:
                value = datetime.fromisoformat(token.text.replace("Z", "+00:00"))
            except ValueError:
                raise ODataError("$filter", f"{token.text} is not a date and time") from None
            return Literal(value.astimezone(timezone.utc), "datetime")
        if token.kind == "name":
            word = token.text.lower()
            if word in ("true", "false"):
                return Literal(word == "true", "boolean")
            if word == "null":
                return Literal(None, "null")
            if token.text in self.properties:
                return self.properties[token.text]
            raise ODataError("$filter", f"unknown property {token.text!r}; one of {', '.join(self.properties)}")
        raise ODataError("$filter", f"expected a property or a value at position {token.position}, found {token.text!r}")

    def compare(self, left, operator: str, right) -> ColumnElement:
        if isinstance(left, Literal) and isinstance(right, Property):
            left, right = right, left
            operator = {"gt": "lt", "lt": "gt", "ge": "le", "le": "ge"}.get(operator, operator)
        if not isinstance(left, Property):
            raise ODataError("$filter", "a comparison needs a property on one side")
        if isinstance(right, Property):
            raise ODataError("$filter", "comparing two properties is not supported")
        column = left.column
        if right.kind == "null":
            if operator == "eq":
                return column.is_(None)
            if operator == "ne":
                return column.is_not(None)
            raise ODataError("$filter", f"null can only be compared with eq or ne, not {operator}")
        value = _coerce(left, right)
        if left.edm == "Edm.Boolean" and operator not in ("eq", "ne"):
            raise ODataError("$filter", f"{left.name} is true or false: compare it with eq or ne, not {operator}")
        return COMPARE[operator](column, value)


def _coerce(prop: Property, literal: Literal):
    expected = {
        "Edm.String": ("string",), "Edm.Int64": ("number",), "Edm.Int32": ("number",),
        "Edm.Boolean": ("boolean",), "Edm.Date": ("date",), "Edm.DateTimeOffset": ("datetime", "date"),
        "Edm.Double": ("number",),
    }[prop.edm]
    if literal.kind not in expected:
        raise ODataError("$filter", f"{prop.name} is {prop.edm}; {literal.kind} {literal.value!r} does not compare with it")
    if prop.edm in ("Edm.Int64", "Edm.Int32") and not isinstance(literal.value, int):
        raise ODataError("$filter", f"{prop.name} is a whole number")
    if prop.edm == "Edm.DateTimeOffset" and literal.kind == "date":
        return datetime(literal.value.year, literal.value.month, literal.value.day, tzinfo=timezone.utc)
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


__all__ = ["ODataError", "Property", "parse_filter", "parse_orderby", "parse_select", "parse_count", "tokenize"]
