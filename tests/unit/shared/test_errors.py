"""Field errors name the field as a caller writes it, and the reason in plain words."""

from shared.errors import field_errors


def test_field_paths_read_as_the_caller_wrote_them():
    errors = field_errors([
        {"loc": ("body", "requests", 0, "type"), "msg": "Value error, unknown request type 'x'", "type": "value_error"},
        {"loc": ("body", "resident", "address", "postcode"), "msg": "Field required", "type": "missing"},
        {"loc": ("body", "colour"), "msg": "Extra inputs are not permitted", "type": "extra_forbidden"},
        {"loc": ("query", "limit"), "msg": "Input should be less than or equal to 200", "type": "less_than_equal"},
    ])
    assert errors == [
        {"field": "requests[0].type", "reason": "unknown request type 'x'"},
        {"field": "resident.address.postcode", "reason": "is required"},
        {"field": "colour", "reason": "unknown field"},
        {"field": "limit", "reason": "Input should be less than or equal to 200", "in": "query"},
    ]
