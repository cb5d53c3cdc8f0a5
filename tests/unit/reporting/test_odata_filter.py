"""The OData $filter reader: SQLAlchemy conditions with bound values over whitelisted columns, or a clear error."""

import pytest
from sqlalchemy import Boolean, Column, Integer, MetaData, String, Table
from sqlalchemy.dialects import sqlite

from services.reporting.odata import ODataError, Property, parse_filter, parse_orderby, parse_select
from shared.db import UtcDateTime

facts = Table(
    "facts",
    MetaData(),
    Column("district", String),
    Column("count", Integer),
    Column("triaged", Boolean),
    Column("received_at", UtcDateTime),
)
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


@pytest.mark.parametrize(
    "expression, reason",
    [
        ("", "is empty"),
        ("district eq 'a' and", "ends early"),
        ("name eq 'x'", "unknown property 'name'"),
        ("district gt", "ends early"),
        ("count eq 'three'", "does not compare"),
        ("year(district) eq 2020", "needs a date property"),
        ("tolower(count) eq 'x'", "needs a text property"),
        ("district in ('a', null)", "not properties or null"),
        ("district in ()", "expected a property or a value"),
        ("district", "expected a comparison"),
        ("startswith(district,'a') gt true", "compare it with eq or ne"),
        ("district eq 'a')", "unexpected ')'"),
        ("district eq 'a'; select 1", "unexpected character ';'"),
        ("district eq district", "two properties"),
        ("startswith(count,'1')", "text property"),
        ("(" * 60 + "triaged eq true" + ")" * 60, "nested deeper"),
        ("x" * 2001, "longer than"),
        ("count lt null", "null can only"),
    ],
)
def test_a_filter_that_is_not_one_is_refused_with_the_reason(expression, reason):
    with pytest.raises(ODataError) as refused:
        parse_filter(expression, PROPS)
    assert refused.value.extensions["errors"][0]["field"] == "$filter"
    assert reason in refused.value.extensions["errors"][0]["reason"]


def test_orderby_and_select_take_only_known_properties():
    assert [(p.name, d) for p, d in parse_orderby("count desc,district", PROPS)] == [
        ("count", True),
        ("district", False),
    ]
    assert [p.name for p in parse_select("district,count", PROPS)] == ["district", "count"]
    with pytest.raises(ODataError):
        parse_orderby("count; drop", PROPS)
    with pytest.raises(ODataError):
        parse_select("password", PROPS)


def test_power_querys_folded_filters_are_read():
    """The shapes Power Query's OData connector writes when a Power BI or Excel step folds."""
    text, params = sql("tolower(district) eq 'thanet'")
    assert text == "lower(facts.district) = ?" and list(params.values()) == ["thanet"]
    assert sql("toupper(district) eq 'THANET'")[0] == "upper(facts.district) = ?"
    assert sql("year(received_at) eq 2020 and month(received_at) eq 4 and day(received_at) eq 1")[0] == (
        "CAST(CAST(STRFTIME('%Y', facts.received_at) AS INTEGER) AS INTEGER) = ? AND "
        "CAST(CAST(STRFTIME('%m', facts.received_at) AS INTEGER) AS INTEGER) = ? AND "
        "CAST(CAST(STRFTIME('%d', facts.received_at) AS INTEGER) AS INTEGER) = ?"
    )
    text, params = sql("district in ('thanet','dover')")
    assert text == "facts.district IN (__[POSTCOMPILE_district_1])" and params == {"district_1": ["thanet", "dover"]}
    assert sql("triaged")[0] == "facts.triaged = 1"
    assert sql("not triaged")[0] == "facts.triaged != 1"
    assert sql("startswith(district,'can') eq true")[0] == "facts.district LIKE ? ESCAPE '\\'"
    assert sql("startswith(district,'can') eq false")[0] == "facts.district NOT LIKE ? ESCAPE '\\'"
    assert sql("contains(tolower(district),'than')")[0] == "lower(facts.district) LIKE ? ESCAPE '\\'"
    text, params = sql("count gt 2.5")
    assert text == "facts.count > ?" and list(params.values()) == [2.5]
    assert list(sql("count eq 5.0")[1].values()) == [5]
    text, params = sql("received_at ge 2020-04-01T00:00:00.0000000Z")
    assert str(list(params.values())[0]).startswith("2020-04-01 00:00:00")
