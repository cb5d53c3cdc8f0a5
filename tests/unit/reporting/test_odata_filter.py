"""The OData $filter reader: SQLAlchemy conditions with bound values over whitelisted columns, or a clear error."""

import pytest
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table
from sqlalchemy.dialects import sqlite

from services.reporting.odata import ODataError, Property, parse_filter, parse_orderby, parse_select
from shared.db import UtcDateTime

facts = Table("facts", MetaData(), Column("district", String), Column("count", Integer),
              Column("triaged", Boolean), Column("received_at", UtcDateTime))
PROPS = {
    "district": Property("district", facts.c.district, "Edm.String"),
    "count": Property("count", facts.c.count, "Edm.Int64"),
    "triaged": Property("triaged", facts.c.triaged, "Edm.Boolean"),
    "received_at": Property("received_at", facts.c.received_at, "Edm.DateTimeOffset"),
}


def sql(expression: str) -> tuple[str, dict]:
    compiled = parse_filter(expression, PROPS).compile(dialect=sqlite.dialect())
    return str(compiled), compiled.params


def test_comparisons_and_or_not_and_parentheses_keep_odatas_precedence():
    text, params = sql("district eq 'thanet' or not (count gt 3 and triaged eq true)")
    assert text == "facts.district = ? OR NOT (facts.count > ? AND facts.triaged = 1)"
    assert sorted(map(str, params.values())) == ["3", "thanet"]


def test_a_quote_inside_a_string_is_a_value_and_never_sql():
    text, params = sql("district eq 'x'' OR 1=1 --'")
    assert text == "facts.district = ?" and list(params.values()) == ["x' OR 1=1 --"]


def test_text_functions_escape_like_wildcards():
    text, params = sql("contains(district,'50%_off')")
    assert "LIKE" in text and list(params.values()) == ["%50\\%\\_off%"]


def test_a_value_on_the_left_is_turned_round():
    assert sql("3 lt count")[0] == "facts.count > ?"


def test_dates_and_null_compare_as_odata_says():
    text, params = sql("received_at ge 2020-04-01T00:00:00Z and district ne null")
    assert text == "facts.received_at >= ? AND facts.district IS NOT NULL"
    assert str(list(params.values())[0]).startswith("2020-04-01 00:00:00")


@pytest.mark.parametrize("expression, reason", [
    ("", "is empty"),
    ("district eq 'a' and", "ends early"),
    ("name eq 'x'", "unknown property 'name'"),
    ("district gt", "ends early"),
    ("count eq 'three'", "does not compare"),
    ("count eq 1.5", "whole number"),
    ("district eq 'a')", "unexpected ')'"),
    ("district eq 'a'; select 1", "unexpected character ';'"),
    ("district eq district", "two properties"),
    ("startswith(count,'1')", "text property"),
    ("(" * 60 + "triaged eq true" + ")" * 60, "nested deeper"),
    ("x" * 2001, "longer than"),
    ("count lt null", "null can only"),
])
def test_a_filter_that_is_not_one_is_refused_with_the_reason(expression, reason):
    with pytest.raises(ODataError) as refused:
        parse_filter(expression, PROPS)
    assert refused.value.extensions["errors"][0]["field"] == "$filter"
    assert reason in refused.value.extensions["errors"][0]["reason"]


def test_orderby_and_select_take_only_known_properties():
    assert [(p.name, d) for p, d in parse_orderby("count desc,district", PROPS)] == [("count", True), ("district", False)]
    assert [p.name for p in parse_select("district,count", PROPS)] == ["district", "count"]
    with pytest.raises(ODataError):
        parse_orderby("count; drop", PROPS)
    with pytest.raises(ODataError):
        parse_select("password", PROPS)
