"""The image installs exactly requirements.lock: every dependency of pyproject.toml pinned, with its hashes."""

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[3]


def pinned() -> dict[str, str]:
    text = (ROOT / "requirements.lock").read_text()
    return {
        canonicalize_name(name): version for name, version in re.findall(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", text, re.M)
    }


def test_every_dependency_of_pyproject_is_pinned_in_the_lock_within_its_range():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    versions = pinned()
    for line in dependencies:
        requirement = Requirement(line)
        name = canonicalize_name(requirement.name)
        assert name in versions, f"{requirement.name} is not in requirements.lock: refresh it (README)"
        assert requirement.specifier.contains(versions[name], prereleases=True), (name, versions[name])


def test_every_pin_in_the_lock_carries_hashes_and_the_image_requires_them():
    text = (ROOT / "requirements.lock").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.strip())
    assert entries and all("--hash=sha256:" in entry for entry in entries if "==" in entry)
    dockerfile = (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
