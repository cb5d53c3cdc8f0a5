from datetime import UTC
from pathlib import Path

import pytest

from services.actions.app import ActionsSettings, create_app
from tests.support.apps import running, test_topics, token

SEED = Path(__file__).parents[3] / "services" / "actions" / "data" / "krf-recovery-cell-action-plans.txt"
PLAN = "krf-recovery-2020"


@pytest.fixture
def settings(database_url, broker, signing_key, unique, var_dir):
    return ActionsSettings(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        jwt_signing_key=signing_key,
        topics=test_topics(unique),
        var_dir=var_dir,
        log_json=False,
        outbox_poll_seconds=0.2,
    )


@pytest.fixture
async def client(settings):
    app = create_app(settings)
    async with running(app) as http:
        http.app = app
        yield http


@pytest.fixture(scope="session")
def seed_bytes() -> bytes:
    return SEED.read_bytes()


async def import_file(
    client,
    settings,
    content: bytes,
    *,
    filename: str = "krf-recovery-cell-action-plans.txt",
    plan: str = PLAN,
    role: str = "recovery-lead",
    data: dict | None = None,
    params: dict | None = None,
):
    return await client.post(
        f"/v1/plans/{plan}/import",
        files={"file": (filename, content)},
        data=data or {},
        params=params or {},
        headers=token(settings, role),
    )


@pytest.fixture
async def seeded(client, settings, seed_bytes) -> dict:
    """The seed plan imported: its report."""
    response = await import_file(client, settings, seed_bytes)
    assert response.status_code == 200, response.text
    return response.json()


async def find_action(client, settings, cell: str, number: int) -> dict:
    response = await client.get("/v1/actions", params={"cell": cell, "plan": PLAN}, headers=token(settings, "analyst"))
    return next(a for a in response.json()["actions"] if a["number"] == number)


def kent_today():
    """Today's date in Kent, where the service counts its days."""
    from datetime import datetime

    from services.actions.domain import today_in_kent

    return today_in_kent(datetime.now(UTC))
