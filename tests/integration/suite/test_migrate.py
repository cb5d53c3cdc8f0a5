"""`kent-together migrate` migrates the services it is given, in one process (as `run` calls it), and only them."""

import sqlite3

from typer.testing import CliRunner

from suite.cli import app


def test_migrate_applies_the_migrations_of_each_service_named_and_no_other(tmp_path, monkeypatch):
    monkeypatch.setenv("KT_VAR_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["migrate", "referrals", "actions"])
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.output.splitlines()] == ["migrated referrals", "migrated actions"]
    for name in ("referrals", "actions"):
        with sqlite3.connect(tmp_path / f"{name}.db") as db:
            assert db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert not (tmp_path / "fulfilment.db").exists()


def test_migrate_refuses_a_service_that_does_not_exist_naming_it():
    result = CliRunner().invoke(app, ["migrate", "referrals", "nowhere"])
    assert result.exit_code == 2
    assert "no service nowhere" in result.output
