import shutil

import pytest

from tests.support.databases import sqlite_template


@pytest.fixture
def reporting_sqlite_url(tmp_path, tmp_path_factory) -> str:
    """A migrated reporting database on SQLite, for tests about what every service shares, not about storage."""
    target = tmp_path / "reporting.db"
    shutil.copy(sqlite_template("reporting", tmp_path_factory.getbasetemp()), target)
    return f"sqlite+aiosqlite:///{target}"
