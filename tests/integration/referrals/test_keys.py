"""Rotating the data keys: with the new key first and the old one after it, old referrals still read and new ones
are sealed with the new key; a keyring without the old key says which key it lacks."""

from pydantic import SecretStr
from sqlalchemy import select

from services.referrals.app import create_app
from services.referrals.models import referrals, tables
from shared.crypto import new_key
from tests.integration.referrals.conftest import referral_body
from tests.support.apps import running, token

SERVICE = "referrals"
OLD, NEW, INDEX = new_key(), new_key(), new_key()


def with_keys(settings, data_keys: str):
    return settings.model_copy(update={"data_keys": SecretStr(data_keys), "blind_index_key": SecretStr(INDEX)})


async def sealed_with(app) -> dict[str, str]:
    """Each referral's id -> the id of the key its personal data is sealed with (and its outbox rows)."""
    runtime = app.state.runtime
    async with runtime.db.sessions() as session:
        rows = (await session.execute(select(referrals.c.id, referrals.c.personal))).all()
    return {referral_id: runtime.keyring.key_id_of(personal) for referral_id, personal in rows}


async def test_a_rotated_keyring_reads_old_rows_and_seals_new_ones_with_the_new_key(settings):
    before = with_keys(settings, f"k1:{OLD}")
    app = create_app(before)
    async with running(app) as client:
        old = (await client.post("/v1/referrals", json=referral_body(), headers=token(settings, "call-centre"))).json()
        assert await sealed_with(app) == {old["id"]: "k1"}

    rotated = with_keys(settings, f"k2:{NEW},k1:{OLD}")
    app = create_app(rotated)
    async with running(app) as client:
        read = await client.get(f"/v1/referrals/{old['id']}", headers=token(settings, "call-centre"))
        assert read.status_code == 200 and read.json()["resident"] == old["resident"]
        found = await client.get("/v1/referrals", params={"phone": "01843 577000"}, headers=token(settings, "admin"))
        assert [r["id"] for r in found.json()["results"]] == [old["id"]]
        body = referral_body()
        body["resident"]["name"] = "Peter Smith"
        new = (await client.post("/v1/referrals", json=body, headers=token(settings, "call-centre"))).json()
        amended = await client.patch(
            f"/v1/referrals/{old['id']}",
            json={"resident": {"phone": "01843 577999"}},
            headers=token(settings, "call-centre"),
        )
        assert amended.status_code == 200, amended.text
        assert await sealed_with(app) == {old["id"]: "k2", new["id"]: "k2"}  # an amendment seals it again
        async with app.state.runtime.db.sessions() as session:
            payloads = (
                await session.scalars(
                    select(tables.outbox.c.payload).where(tables.outbox.c.topic == settings.topics.referrals)
                )
            ).all()
        assert sorted({app.state.runtime.keyring.key_id_of(p) for p in payloads}) == ["k1", "k2"]

    without_old = with_keys(settings, f"k3:{new_key()}")
    app = create_app(without_old)
    async with running(app) as client:
        response = await client.get(f"/v1/referrals/{old['id']}", headers=token(settings, "call-centre"))
        assert response.status_code == 500  # refused, never garbage; the log names the key:
        runtime = app.state.runtime
        async with runtime.db.sessions() as session:
            personal = await session.scalar(select(referrals.c.personal).where(referrals.c.id == old["id"]))
        try:
            runtime.keyring.open(personal)
        except Exception as error:
            assert "data key 'k2', which KT_DATA_KEYS does not hold" in str(error)
        else:
            raise AssertionError("opened with the wrong key")
