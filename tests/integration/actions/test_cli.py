"""`kent-together import-actions FILE`: the same import as the API, from the command line."""

from typer.testing import CliRunner

from suite.cli import app
from tests.integration.actions.conftest import SEED

SERVICE = "actions"


def run_import(database_url, var_dir, *args) -> tuple[int, str]:
    """The exit code and what the command said, its lines as a terminal of any width wraps them undone."""
    env = {"ACTIONS_DATABASE_URL": database_url, "KT_VAR_DIR": str(var_dir), "KT_LOG_JSON": "false"}
    result = CliRunner().invoke(app, ["import-actions", *map(str, args)], env=env)
    return result.exit_code, " ".join(result.output.split())


def test_the_import_command_imports_the_plan_and_a_second_run_changes_nothing(database_url, var_dir):
    code, said = run_import(database_url, var_dir, SEED)
    assert code == 0, said
    assert "155/155" in said  # the progress bar, finished
    assert "krf-recovery-2020: 155 created, 0 updated, 0 unchanged, 0 rejected (applied)" in said
    assert "cross references: 4 added" in said

    code, said = run_import(database_url, var_dir, SEED, "--plan", "krf-recovery-2020")
    assert code == 0, said
    assert "0 created, 0 updated, 155 unchanged, 0 rejected (applied)" in said


def test_the_import_command_rejects_a_bad_file_whole_and_says_why(database_url, var_dir, tmp_path):
    text = SEED.read_text().replace("\tOpportunity\tKCC/Medway Council\t", "\tPerhaps\tKCC/Medway Council\t", 1)
    bad = tmp_path / "plan.txt"
    bad.write_text(text)
    code, said = run_import(database_url, var_dir, bad)
    assert code == 1
    assert "rejected row 25: 'Perhaps' is neither Mitigate nor Opportunity" in said
    assert "nothing was changed" in said

    code, said = run_import(database_url, var_dir, SEED, "--dry-run")
    assert code == 0 and "155 created, 0 updated, 0 unchanged, 0 rejected (dry run, nothing changed)" in said
