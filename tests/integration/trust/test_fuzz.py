"""Hostile input: every operation of every installed service, fuzzed from its own OpenAPI document.

Schemathesis generates valid and invalid requests (positive and negative modes)
and sends them in-process (ASGI) to the running app, once with an
administrator's token and once with a token of a role the route is for. No
answer may be a 5xx, and every answer must fit the schema the service
documents for it. Cases are derandomised (the same every run, so a failure
reproduces) and bounded: `KT_FUZZ_EXAMPLES` per operation and mode (default 15; set it higher for a deeper run).
"""

from __future__ import annotations

import os

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.support.access import OWN_HUB, PUBLIC, callers
from tests.support.apps import token
from tests.support.services import build_app, make_settings, service_names

EXAMPLES = int(os.environ.get("KT_FUZZ_EXAMPLES", "15"))


@pytest.fixture
def fuzz_app(sqlite_databases, broker, signing_key, unique, tmp_path, shared_resources):
    def build(service: str):
        settings = make_settings(
            service,
            database_url=sqlite_databases[service],
            broker=broker,
            signing_key=signing_key,
            unique=unique,
            var_dir=tmp_path / "var",
        )
        return build_app(service, settings, **shared_resources), settings

    return build


def fuzz_operation(operation, *, headers: dict[str, str], mode: GenerationMode) -> None:
    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: bounded time; the case is printed as curl
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        if case.path_parameters and "hub" in case.path_parameters:
            case.path_parameters["hub"] = OWN_HUB  # explore past the hub check, not only its 403
        case.call_and_validate(headers=headers, checks=[not_a_server_error, response_schema_conformance])

    run()


@pytest.mark.parametrize("as_role", ["admin", "a role the route is for"])
@pytest.mark.parametrize("service", service_names())
def test_no_hostile_or_odd_request_gets_a_5xx_or_an_answer_that_breaks_the_schema(service, as_role, fuzz_app):
    app, settings = fuzz_app(service)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        name = f"{operation.method.upper()} {operation.path}"
        if name in PUBLIC:
            continue
        role = "admin" if as_role == "admin" else sorted(callers(service, name) - {"admin"} or {"admin"})[0]
        headers = token(settings, role, hub=OWN_HUB if role == "hub" else None)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz_operation(operation, headers=headers, mode=mode)
            except hypothesis.errors.Unsatisfiable:
                pass  # nothing in the operation can be made invalid (no parameters, no body)
            except Exception as error:  # collect every operation's failure, not only the first
                failures.append(f"--- {name} as {role}, {mode.value} data:\n{error}")
    assert not failures, "\n".join(failures)
