"""The standard `alembic` commands work on each service's own database, as alembic.ini documents them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SERVICE = "actions"


def alembic(*args: str, database_url: str) -> str:
    """`alembic -n actions …` from the repository root, the service's database named as it is in production."""
    env = {**os.environ, "ACTIONS_DATABASE_URL": database_url}
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-n", SERVICE, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_history_downgrade_upgrade_and_check_work_on_the_services_database(database_url):
    """`check` is autogenerate's comparison: the models and the migrations agree, so a revision starts clean."""
    assert "0001 -> 0002 (head)" in alembic("history", database_url=database_url)
    assert alembic("current", database_url=database_url).strip().endswith("0002 (head)")
    alembic("downgrade", "-1", database_url=database_url)
    assert alembic("current", database_url=database_url).strip().endswith("0001")
    alembic("upgrade", "head", database_url=database_url)
    assert "No new upgrade operations detected" in alembic("check", database_url=database_url)


@pytest.mark.parametrize("service", ["referrals", "fulfilment", "reporting"])
def test_every_service_has_its_section(service):
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-n", service, "heads"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "(head)" in done.stdout, done.stderr
