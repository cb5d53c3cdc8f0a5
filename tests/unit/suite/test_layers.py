"""The house's floors: shared/ under the services, the suite above them, tests and bench one way round."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def imported_packages(folder: Path) -> dict[str, set[str]]:
    """Each module under `folder` (by path) and the top-level packages it imports, lazily or not."""
    found = {}
    for path in sorted(folder.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


def importers_of(folder: str, *packages: str) -> list[str]:
    return [
        f"{module} imports {', '.join(sorted(names & set(packages)))}"
        for module, names in imported_packages(ROOT / folder).items()
        if names & set(packages)
    ]


def test_shared_imports_no_service_and_not_the_suite_above_it():
    assert importers_of("shared", "services", "suite") == []


def test_neither_shared_nor_the_suite_finds_a_module_by_a_string():
    """No `importlib.import_module(f"services.{name}…")`: the registry names every service's spec."""
    found = [
        str(path.relative_to(ROOT))
        for folder in ("shared", "suite")
        for path in (ROOT / folder).rglob("*.py")
        if "import_module" in path.read_text() or "find_spec" in path.read_text()
    ]
    assert found == []


def test_no_service_imports_the_suite_above_it():
    assert importers_of("services", "suite") == []


def test_tests_never_import_bench_so_only_bench_imports_tests_support():
    assert importers_of("tests", "bench") == []
    assert importers_of("bench", "tests")  # the fault suite's command line runs tests/support/chaos.py


def test_every_service_declares_its_spec_in_the_suite_registry():
    from suite import registry

    declared = {path.parent.name for path in (ROOT / "services").glob("*/app.py")}
    assert set(registry.names()) == declared
    assert [spec.port for spec in registry.RUNNABLE] == sorted(spec.port for spec in registry.RUNNABLE)
    for spec in registry.RUNNABLE:
        assert (spec.migrations / "env.py").is_file(), spec.name
        assert spec.settings_class().service_name == spec.name
