"""Finishing a rotation in referrals (`kent-together rekey`): the blind-index key changed with search working
throughout, an amendment made while rekey runs never lost, and the command's printout.

Both databases, through the real service app (tests/integration/trust/test_rekey.py does
both services' every sealed column).
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from services.referrals.app import create_app
from services.referrals.models import referrals, sealing
from shared import rekey as r
from shared.crypto import new_key
from tests.integration.referrals.conftest import referral_body
from tests.support.apps import running, token
from tests.support.services import sqlite_database

SERVICE = "referrals"
K1, K2, INDEX_1, INDEX_2 = new_key(), new_key(), new_key(), new_key()


def keyed(settings, data_keys: str, index: str, previous: str = ""):
    return settings.model_copy(
        update={
            "data_keys": SecretStr(data_keys),
            "blind_index_key": SecretStr(index),
            "blind_index_key_previous": SecretStr(previous),
        }
    )


async def run_rekey(app, **options) -> dict[str, r.TableReport]:
    rt = app.state.runtime
    reports = await r.rekey(rt.db, rt.tables.metadata, rt.keyring, sealing=sealing, **options)
    return {report.table: report for report in reports}


async def census(app) -> r.Census:
    rt = app.state.runtime
    return await r.census(rt.db, rt.tables.metadata, rt.keyring, sealing=sealing)


async def found(client, settings, **params) -> list[str]:
    response = await client.get("/v1/referrals", params=params, headers=token(settings, "admin"))
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["results"]]


SEARCHES = ({"name": "jones"}, {"name": "Margaret JONES"}, {"phone": "01843 577000"}, {"postcode": "CT9 2RN"})


async def test_a_new_blind_index_key_with_the_old_as_previous_keeps_search_working_before_and_after_rekey(settings):
    app = create_app(keyed(settings, f"k1:{K1}", INDEX_1))
    async with running(app) as client:
        posted = await client.post("/v1/referrals", json=referral_body(), headers=token(settings, "call-centre"))
        margaret = posted.json()["id"]
        for params in SEARCHES:
            assert await found(client, settings, **params) == [margaret], params

    app = create_app(keyed(settings, f"k1:{K1}", INDEX_2))
    async with running(app) as client:  # what the previous key is for: without it, nothing indexed before is found
        assert await found(client, settings, name="jones") == []
        assert (await census(app)).stale_indexes == 1

    app = create_app(keyed(settings, f"k1:{K1}", INDEX_2, previous=INDEX_1))
    async with running(app) as client:
        for params in SEARCHES:
            assert await found(client, settings, **params) == [margaret], params
        reports = await run_rekey(app)
        assert (reports["referrals"].examined, reports["referrals"].reindexed, reports["referrals"].resealed) == (
            1,
            1,
            0,
        )
        assert all(report.resealed == 0 for report in reports.values()), "the data key did not change"
        for params in SEARCHES:
            assert await found(client, settings, **params) == [margaret], params
        after = await census(app)
        assert after.finished and after.stale_indexes == 0
        assert (await run_rekey(app))["referrals"].reindexed == 0, "a second run finds nothing to do"

    app = create_app(keyed(settings, f"k1:{K1}", INDEX_2))
    async with running(app) as client:
        for params in SEARCHES:
            assert await found(client, settings, **params) == [margaret], params
        again = await client.post("/v1/referrals", json=referral_body(), headers=token(settings, "call-centre"))
        assert again.json()["possible_duplicate"] is True, "duplicate detection finds her with the new key"


async def test_an_amendment_made_between_rekeys_read_and_its_write_is_kept(settings):
    app = create_app(keyed(settings, f"k1:{K1}", INDEX_1))
    async with running(app) as client:
        margaret = (
            await client.post("/v1/referrals", json=referral_body(), headers=token(settings, "call-centre"))
        ).json()["id"]
        body = referral_body()
        body["resident"].update(name="Peter Smith", phone="01843 588000")
        peter = (await client.post("/v1/referrals", json=body, headers=token(settings, "call-centre"))).json()["id"]

    app = create_app(keyed(settings, f"k2:{K2},k1:{K1}", INDEX_2, previous=INDEX_1))
    amended = []

    async with running(app) as client:

        async def amend_meanwhile(table: str, batch: int) -> None:
            if table == "referrals" and batch == 1:  # rekey has read margaret's row (sealed with k1), not written it
                response = await client.patch(
                    f"/v1/referrals/{margaret}",
                    json={
                        "resident": {
                            "phone": "01843 577999",
                            "address": {"line1": "3 Harbour Street", "postcode": "CT9 1AA"},
                        },
                    },
                    headers=token(settings, "call-centre"),
                )
                assert response.status_code == 200, response.text
                amended.append(response.json())

        reports = await run_rekey(app, after_read=amend_meanwhile)
        assert amended, "the amendment was made while rekey ran"
        assert reports["referrals"].changed_meanwhile == 1 and reports["referrals"].left == 0
        assert reports["referrals"].examined == 2
        read = (await client.get(f"/v1/referrals/{margaret}", headers=token(settings, "call-centre"))).json()
        assert read["resident"]["phone"] == "+441843577999", "the amendment was not overwritten with what rekey read"
        assert read["resident"]["address"]["line1"] == "3 Harbour Street" and read["version"] == 2
        assert await found(client, settings, phone="01843 577999") == [margaret]
        assert await found(client, settings, phone="01843 577000") == []
        assert await found(client, settings, postcode="CT9 1AA") == [margaret]
        assert await found(client, settings, phone="01843 588000") == [peter]
        async with app.state.runtime.db.sessions() as session:
            sealed = dict((await session.execute(select(referrals.c.id, referrals.c.personal))).all())
        assert {app.state.runtime.keyring.key_id_of(v) for v in sealed.values()} == {"k2"}
        assert (await census(app)).finished


@pytest.fixture
def fulfilment_database(tmp_path, tmp_path_factory) -> str:
    """For the command without a service name (made here: migrations cannot run inside the test's loop)."""
    return sqlite_database("fulfilment", tmp_path=tmp_path, scratch=tmp_path_factory.getbasetemp())


@pytest.fixture
def web_database(tmp_path, tmp_path_factory) -> str:
    """The web front's sessions are sealed too: the command without a service name rekeys them as well."""
    return sqlite_database("web", tmp_path=tmp_path, scratch=tmp_path_factory.getbasetemp())


async def test_the_command_prints_counts_per_table_and_which_keys_still_seal_something(
    settings, fulfilment_database, web_database
):
    app = create_app(keyed(settings, f"k1:{K1}", INDEX_1))
    async with running(app) as client:
        for name in ("Margaret Jones", "Peter Smith", "Ann Lee"):
            body = referral_body()
            body["resident"]["name"] = name
            assert (
                await client.post("/v1/referrals", json=body, headers=token(settings, "call-centre"))
            ).status_code == 201

    env = {
        "PATH": os.environ.get("PATH", ""),
        "KT_VAR_DIR": str(settings.var_dir),
        "KT_LOG_JSON": "false",
        "REFERRALS_DATABASE_URL": settings.database_url,
        "FULFILMENT_DATABASE_URL": fulfilment_database,
        "WEB_DATABASE_URL": web_database,
        "KT_DATA_KEYS": f"k2:{K2},k1:{K1}",
        "KT_BLIND_INDEX_KEY": INDEX_2,
        "KT_BLIND_INDEX_KEY_PREVIOUS": INDEX_1,
    }

    async def command(*args: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "suite.cli",
            "rekey",
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        return process.returncode, out.decode()

    code, out = await command("referrals", "--dry-run", "--batch", "2")
    assert code == 0, out
    assert "dry run" in out and "not finished" in out
    line = next(line.split() for line in out.splitlines() if line.strip().startswith("referrals "))
    assert line[1:4] == ["3", "3", "3"], out  # examined, would re-seal, would re-index
    assert "data keys still sealing values: k1 (" in out, out

    code, out = await command("--batch", "2")  # every service holding sealed data: referrals and fulfilment
    assert code == 0, out
    assert "referrals:" in out and "fulfilment:" in out
    line = next(line.split() for line in out.splitlines() if line.strip().startswith("referrals "))
    assert line[1:4] == ["3", "3", "3"], out
    assert "requests" in out and "referral_changes" in out and "outbox" in out
    assert "data keys still sealing values: k2 (" in out and "k1 (" not in out, out
    assert "blind indexes not made with KT_BLIND_INDEX_KEY: 0" in out
    assert (
        "done: only 'k2' seals data in referrals; k1 no longer needed here; KT_BLIND_INDEX_KEY_PREVIOUS no longer"
        in out
    )

    code, out = await command("reporting")
    assert code == 2 and "holds no sealed data" in out
