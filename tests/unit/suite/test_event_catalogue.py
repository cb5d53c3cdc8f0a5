"""docs/events.md is the whole event catalogue, written from the contracts."""

from pathlib import Path

from shared.events import REGISTRY, TYPE_PREFIX
from suite.events_doc import render_catalogue

ROOT = Path(__file__).resolve().parents[3]


def test_the_committed_event_catalogue_is_the_one_the_contracts_make():
    assert (ROOT / "docs" / "events.md").read_text() == render_catalogue(), "run `kent-together docs`"


def test_the_catalogue_lists_every_contract_with_its_topic_and_whether_it_is_personal():
    catalogue = render_catalogue()
    rows = {line.split("|")[1].strip(): line for line in catalogue.splitlines() if line.startswith("| [`")}
    assert len(rows) == len(REGISTRY)
    for type_name, contract in REGISTRY.items():
        row = next(line for name, line in rows.items() if f"`{type_name.removeprefix(TYPE_PREFIX)}`" in name)
        assert ("| yes |" if contract.personal_data else "| no |") in row, type_name
        assert f"### {contract.__name__}" in catalogue
        for field in contract.model_fields:
            assert f"| `{field}` |" in catalogue.split(f"### {contract.__name__}\n", 1)[1], (type_name, field)
