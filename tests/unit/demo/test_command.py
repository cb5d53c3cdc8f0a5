"""`kent-together demo`'s options, read and checked before anything is posted (`--dry-run` posts nothing)."""

from typer.testing import CliRunner

from suite.cli import app


def run(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["demo", *args], env={"KT_LOG_JSON": "false"})
    return result.exit_code, " ".join(result.output.split())


def test_the_april_2020_preset_plans_the_briefings_figures():
    code, said = run("--preset", "april-2020", "--dry-run")
    assert code == 0, said
    assert "2,893 referrals carrying 4,293 requests, 2020-04-01 to 2020-04-25 (25 days" in said
    assert f"food │ {round(0.55 * 4293):,} │ 55.0%" in said
    assert f"prescription │ {round(0.27 * 4293):,} │ 27.0%" in said


def test_options_override_the_preset_and_requests_follow_the_referrals():
    code, said = run("--preset", "april-2020", "--referrals", "100", "--mix", "food=1,prescription=1", "--dry-run")
    assert code == 0, said
    assert f"100 referrals carrying {round(100 * 4293 / 2893)} requests" in said
    assert "food │ 74 │ 50.0%" in said


def test_a_date_that_is_not_a_date_is_refused_naming_the_option():
    code, said = run("--from", "1 April", "--dry-run")
    assert code == 2 and "--from '1 April' is not a date" in said


def test_an_unknown_preset_is_refused_naming_those_there_are():
    code, said = run("--preset", "may-2020", "--dry-run")
    assert code == 2 and "one of april-2020" in said


def test_an_unknown_district_is_refused_naming_the_hubs():
    code, said = run("--districts", "thanet,medway", "--dry-run")
    assert code == 2 and "--districts: unknown medway; one of ashford" in said


def test_a_token_file_without_an_administrators_token_is_refused_before_anything_is_posted(tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text('{"hubs": {"thanet": "x"}}')
    code, said = run("--referrals", "3", "--token-file", str(tokens), "--referrals-url", "http://127.0.0.1:9")
    assert code == 2 and 'needs "backfill": an administrator\'s token' in said
