import pytest

from services.referrals.app import ReferralsSettings, create_app
from tests.support.apps import running, test_topics


@pytest.fixture
def settings(database_url, broker, signing_key, unique, var_dir):
    return ReferralsSettings(
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


def referral_body(**overrides):
    """A valid referral as a call-centre front-end would post it."""
    body = {
        "channel": "phone",
        "resident": {
            "name": "Margaret Jones",
            "date_of_birth": "1941-03-02",
            "phone": "01843 577000",
            "address": {"line1": "12 Northdown Road", "town": "Margate", "postcode": "ct9 2rn"},
            "contact_preference": "phone",
            "vulnerabilities": ["shielding", "lives-alone"],
        },
        "consent": {"to_share": True},
        "requests": [
            {"type": "food", "details": "Weekly shop; diabetic"},
            {"type": "prescription", "details": "Boots, Northdown Road"},
        ],
    }
    body.update(overrides)
    return body
