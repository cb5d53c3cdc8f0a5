"""docs/architecture.md is a map that holds: every command listed, the referral's walk through files that exist."""

import re
from pathlib import Path

from suite.cli import app

ROOT = Path(__file__).resolve().parents[3]
DOC = (ROOT / "docs" / "architecture.md").read_text()


def test_the_map_lists_every_command_of_the_command_line():
    commands = {command.name or command.callback.__name__.replace("_", "-") for command in app.registered_commands}
    listed = set(re.findall(r"^\| `([a-z-]+)[ `]", DOC.split("### Every command", 1)[1], re.M))
    assert commands == listed


def test_the_walk_of_one_referral_names_at_most_twelve_files_and_each_exists():
    walk = DOC.split("## One referral, from", 1)[1].split("\n## ", 1)[0]
    files = re.findall(r"^\d+\. \*\*`([^`]+)`\*\*", walk, re.M)
    assert 0 < len(files) <= 12
    assert [name for name in files if not (ROOT / name).is_file()] == []
