"""Domain errors are plain Python: the rules raise them without the web framework, the HTTP edge says them."""

import subprocess
import sys

import pytest

from shared.errors import Conflict, DomainError, NotFound, ValidationFailed
from shared.http_errors import PROBLEMS, problem_of


@pytest.mark.parametrize(
    "module",
    [
        "services.referrals.domain",
        "services.fulfilment.domain",
        "services.actions.domain",
        "services.reporting.domain",
        "shared.errors",
    ],
)
def test_a_domain_module_imports_without_the_web_framework(module):
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys, {module}; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('fastapi', 'starlette')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert loaded == "[]"


def test_an_error_a_service_names_itself_answers_with_its_family_status_and_its_own_slug():
    class ReferralGone(Conflict):
        slug, title = "referral-gone", "The referral is gone"

    answer = problem_of(ReferralGone("taken back"))
    assert (answer.status, answer.slug, answer.title) == (409, "referral-gone", "The referral is gone")
    assert problem_of(NotFound()).status == 404
    assert problem_of(ValidationFailed([{"field": "x", "reason": "is required"}])).slug == "validation-failed"


def _every_subclass(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _every_subclass(sub)


def test_no_domain_error_carries_an_http_status_of_its_own():
    """The status belongs to the edge's table: an error class that sets one would be silently ignored there."""
    import suite.registry  # noqa: F401  (loads every service, and with it every error class it defines)

    carrying = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _every_subclass(DomainError)
        if any(name in vars(cls) for name in ("status", "retry_after", "status_code"))
    ]
    assert carrying == []
    assert DomainError in PROBLEMS
