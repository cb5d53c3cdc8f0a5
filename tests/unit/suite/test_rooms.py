"""The rooms of a service hold what docs/architecture.md says: figures without HTTP, routes without tables, no topic by hand."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
WEB = {"fastapi", "starlette"}


def modules_imported(relative: str) -> set[str]:
    """Every module a file imports, by its full dotted name, lazily or not."""
    names = set()
    for node in ast.walk(ast.parse((ROOT / relative).read_text(), filename=relative)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_reporting_figures_and_entity_sets_are_read_without_the_web_framework():
    for room in ("services/reporting/figures.py", "services/reporting/entity_sets.py"):
        assert {name.split(".")[0] for name in modules_imported(room)} & WEB == set(), room


def test_reporting_routes_read_no_table_and_build_no_sql():
    imported = modules_imported("services/reporting/api.py")
    assert "services.reporting.models" not in imported
    assert not any(name == "sqlalchemy" or name.startswith("sqlalchemy.") for name in imported)


def test_the_actions_rooms_other_than_the_routes_need_no_web_framework():
    rooms = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "services/actions").glob("*.py"))
        if path.name not in ("api.py", "app.py")
    ]
    assert len(rooms) >= 8  # plans, tracking, reading, progress, repository, announcements, service, domain…
    assert [room for room in rooms if {name.split(".")[0] for name in modules_imported(room)} & WEB] == []


def test_actions_and_reporting_publish_every_event_where_its_contract_says():
    """No `uow.publish(..., topic=...)`: each action contract declares its topic (shared/events/actions.py)."""
    by_hand = []
    for folder in ("services/actions", "services/reporting"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("publish", "publish_data")
                    and any(keyword.arg == "topic" for keyword in node.keywords)
                ):
                    by_hand.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert by_hand == []
