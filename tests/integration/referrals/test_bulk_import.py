"""Bulk referral import: a shielded list dry-run first, then imported; a re-run creates nothing; bad rows named."""

import csv
import io

import openpyxl
import orjson
from sqlalchemy import func, select

from services.referrals import imports
from services.referrals.models import referrals, tables
from tests.integration.referrals.conftest import referral_body
from tests.support.apps import token

SERVICE = "referrals"


def shielded_row(i: int) -> dict[str, str]:
    return {
        "name": f"Resident {i:04d} Shielded",
        "date_of_birth": f"{1930 + i % 50}-0{1 + i % 9}-1{i % 10}",
        "phone": f"01843 {500000 + i}",
        "address_line1": f"{i} Northdown Road",
        "town": "Margate",
        "postcode": f"CT{1 + i % 20} {1 + i % 9}AB",
        "vulnerabilities": "shielding",
        "needs": "food" if i % 3 else "food;prescription",
        "consent_to_share": "yes",
        "consent_given_by": "best-interests",
        "referrer_name": "NHS shielded patient list",
    }


def as_csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=imports.NAMES)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


async def upload(client, settings, content: bytes, *, dry_run: bool, name="shielded.csv", accept="application/json"):
    response = await client.post(
        "/v1/referrals/imports",
        params={"dry_run": str(dry_run).lower()},
        files={"file": (name, content)},
        headers={**token(settings, "admin"), "Accept": accept},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return response


async def stored(client) -> tuple[int, int]:
    """(referrals, referral.received events in the outbox)."""
    async with client.app.state.runtime.db.sessions() as session:
        count = await session.scalar(select(func.count()).select_from(referrals))
        events = await session.scalar(
            select(func.count()).select_from(tables.outbox).where(tables.outbox.c.type.like("%referral.received%"))
        )
    return count, events


async def test_a_shielded_list_of_2000_is_dry_run_then_imported_and_a_rerun_of_the_file_creates_nothing(
    client,
    settings,
):
    content = as_csv([shielded_row(i) for i in range(2000)])

    dry = (await upload(client, settings, content, dry_run=True)).json()
    assert dry["counts"] == {
        "accepted": 2000,
        "possible-duplicate": 0,
        "already-imported": 0,
        "out-of-area": 0,
        "error": 0,
    }
    assert dry["created"] == 0 and await stored(client) == (0, 0)

    real = (await upload(client, settings, content, dry_run=False)).json()
    assert real["created"] == 2000 and real["counts"]["accepted"] == 2000
    assert await stored(client) == (2000, 2000)
    first = real["rows"][0]
    found = await client.get(f"/v1/referrals/{first['reference']}", headers=token(settings, "admin"))
    assert found.json()["resident"]["name"] == "Resident 0000 Shielded"
    assert found.json()["resident"]["vulnerabilities"] == ["shielding"]
    assert [r["type"] for r in found.json()["requests"]] == ["food", "prescription"]

    again = (await upload(client, settings, content, dry_run=False)).json()
    assert again["created"] == 0 and again["counts"]["already-imported"] == 2000
    assert [r["referral_id"] for r in again["rows"]] == [r["referral_id"] for r in real["rows"]]
    assert await stored(client) == (2000, 2000)
    rerun_dry = (await upload(client, settings, content, dry_run=True)).json()
    assert rerun_dry["counts"]["already-imported"] == 2000


async def test_each_row_is_reported_with_the_column_at_fault_and_only_good_rows_in_kent_are_taken(client, settings):
    taken = await client.post("/v1/referrals", json=referral_body(), headers=token(settings, "call-centre"))
    margaret = {
        "name": "Margaret Jones",
        "date_of_birth": "02/03/1941",
        "address_line1": "12 Northdown Road",
        "postcode": "CT9 2RN",
        "needs": "food",
        "consent_to_share": "yes",
        "referrer_name": "Thanet GP surgery",
    }
    rows = [
        shielded_row(1),
        {**shielded_row(2), "postcode": "not a postcode"},
        {**shielded_row(3), "needs": "food;haircut"},
        {**shielded_row(4), "consent_to_share": ""},
        {**shielded_row(5), "postcode": "SW1A 1AA"},
        margaret,  # the same person as the referral above, with food open: linked as a duplicate
        shielded_row(1),  # the same row twice: taken once
    ]

    dry = (await upload(client, settings, as_csv(rows), dry_run=True)).json()
    real = (await upload(client, settings, as_csv(rows), dry_run=False)).json()

    for report in (dry, real):
        by_row = {r["row"]: r for r in report["rows"]}
        assert [by_row[n]["status"] for n in range(2, 9)] == [
            "accepted",
            "error",
            "error",
            "error",
            "out-of-area",
            "possible-duplicate",
            "already-imported",
        ]
        assert [e["field"] for e in by_row[3]["errors"]] == ["postcode"]
        assert [e["field"] for e in by_row[4]["errors"]] == ["needs"] and "haircut" in by_row[4]["errors"][0]["reason"]
        assert [e["field"] for e in by_row[5]["errors"]] == ["consent_to_share"]
        assert by_row[6]["errors"][0]["field"] == "postcode"
    assert real["created"] == 2
    duplicate = next(r for r in real["rows"] if r["row"] == 7)
    found = await client.get(f"/v1/referrals/{duplicate['referral_id']}", headers=token(settings, "admin"))
    assert found.json()["requests"][0]["duplicate_of"] == taken.json()["requests"][0]["id"]
    assert found.json()["resident"]["date_of_birth"] == "1941-03-02"


async def test_an_xlsx_list_streams_its_progress_and_the_template_is_the_shape_it_reads(client, settings):
    template = await client.get("/v1/referrals/imports/template", headers=token(settings, "admin"))
    header, example = list(csv.reader(io.StringIO(template.text)))
    assert tuple(header) == imports.NAMES
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(header)
    sheet.append(example)
    for i in range(449):
        sheet.append([shielded_row(i).get(name, "") for name in header])
    content = io.BytesIO()
    book.save(content)

    response = await upload(
        client, settings, content.getvalue(), dry_run=False, name="list.xlsx", accept="application/x-ndjson"
    )

    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert [line["rows_read"] for line in lines[:-1]] == [200, 400, 450]
    assert lines[-1]["report"]["created"] == 450 and await stored(client) == (450, 450)


async def test_the_command_lines_import_reads_the_file_in_batches_and_reports_as_the_api_does(client, tmp_path):
    path = tmp_path / "list.csv"
    path.write_bytes(as_csv([shielded_row(i) for i in range(250)]))
    seen = []

    dry = await imports.import_file(client.app.state.runtime.uow, path=path, dry_run=True, on_progress=seen.append)
    real = await imports.import_file(client.app.state.runtime.uow, path=path, dry_run=False)

    assert imports.count_rows(path) == 250 and seen == [200, 250]
    assert dry.counts["accepted"] == 250 and dry.created == 0
    assert real.created == 250 and await stored(client) == (250, 250)
