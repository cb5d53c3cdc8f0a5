"""The whole way: referrals posted through the API, worked by hubs in fulfilment, counted by reporting.

Three apps in this process on one real broker, each with its own SQLite database
(their PostgreSQL paths are covered service by service). Every figure must equal
what was posted, in JSON, CSV and OData; `kent-together replay` must rebuild the
same figures; and the reporting database must hold none of the residents' details.
"""

import asyncio
import csv
import io
import shutil

import pytest
from typer.testing import CliRunner

from services.fulfilment.app import create_app as create_fulfilment
from services.referrals.app import ReferralsSettings
from services.referrals.app import create_app as create_referrals
from services.reporting.app import consumed_topics
from services.reporting.app import create_app as create_reporting
from shared.bus import ensure_topics
from suite.cli import app as cli
from tests.integration.fulfilment.conftest import directory, hub_assignments  # noqa: F401
from tests.integration.fulfilment.conftest import make_settings as fulfilment_settings
from tests.integration.referrals.conftest import referral_body
from tests.integration.reporting.conftest import analyst, by
from tests.integration.reporting.conftest import make_settings as reporting_settings
from tests.support.apps import running, token
from tests.support.databases import sqlite_template

RESIDENTS = [  # name, phone, postcode, channel, request types
    ("Margaret Jones", "01843 577000", "CT9 2RN", "phone", ("food", "prescription")),
    ("Arthur Penhaligon", "01227 862000", "CT1 1YW", "online", ("food",)),
    ("Dorothy Whitlock", "01634 306000", "ME4 4TR", "partner", ("befriending",)),
    ("Samuel Okafor", "01843 577111", "CT9 2RN", "phone", ("financial",)),
]


@pytest.fixture
def databases(tmp_path, tmp_path_factory):
    urls = {}
    for service in ("referrals", "fulfilment", "reporting"):
        target = tmp_path / f"{service}.db"
        shutil.copy(sqlite_template(service, tmp_path_factory.getbasetemp()), target)
        urls[service] = f"sqlite+aiosqlite:///{target}"
    return urls


async def test_posted_referrals_worked_by_hubs_give_exact_figures_that_replay_rebuilds_without_personal_data(
    databases,
    broker,
    signing_key,
    unique,
    var_dir,
    directory,  # noqa: F811
):
    common = dict(broker=broker, signing_key=signing_key, unique=unique, var_dir=var_dir)
    referrals_cfg = ReferralsSettings(
        database_url=databases["referrals"],
        kafka_bootstrap_servers=broker.bootstrap_servers,
        jwt_signing_key=signing_key,
        topics=reporting_settings(database_url="", **common).topics,
        var_dir=var_dir,
        log_json=False,
        outbox_poll_seconds=0.1,
    )
    fulfilment_cfg = fulfilment_settings(database_url=databases["fulfilment"], **common)
    reporting_cfg = reporting_settings(database_url=databases["reporting"], **common)
    topics = reporting_cfg.topics
    await ensure_topics(
        broker.bootstrap_servers, {name: 3 for name in [topics.referrals, *consumed_topics(reporting_cfg)]}
    )

    async with (
        running(create_referrals(referrals_cfg)) as referrals,
        running(create_fulfilment(fulfilment_cfg, directory=directory)) as fulfilment,
        running(create_reporting(reporting_cfg)) as reporting,
    ):
        for name, phone, postcode, channel, types in RESIDENTS:
            body = referral_body(channel=channel, requests=[{"type": t, "details": "please call"} for t in types])
            body["resident"] |= {"name": name, "phone": phone}
            body["resident"]["address"]["postcode"] = postcode
            if channel == "partner":
                body["referrer"] = {"name": "Priya Shah", "organisation": "Chatham surgery", "relationship": "GP"}
            posted = await referrals.post("/v1/referrals", json=body, headers=token(referrals_cfg, "call-centre"))
            assert posted.status_code == 201, posted.text

        thanet = await hub_assignments(fulfilment, fulfilment_cfg, "thanet", expect=3)
        [canterbury] = await hub_assignments(fulfilment, fulfilment_cfg, "canterbury", expect=1)
        food = next(a for a in thanet if a["type"] == "food")
        hub = token(fulfilment_cfg, "hub", hub="thanet", subject="thanet-staff")
        for step in ({"to": "accepted"}, {"to": "in_progress"}, {"to": "fulfilled", "outcome": "delivered"}):
            moved = await fulfilment.post(f"/v1/assignments/{food['id']}/transitions", json=step, headers=hub)
            assert moved.status_code == 200, moved.text
        accepted = await fulfilment.post(
            f"/v1/assignments/{canterbury['id']}/transitions",
            json={"to": "accepted"},
            headers=token(fulfilment_cfg, "hub", hub="canterbury", subject="c"),
        )
        assert accepted.status_code == 200, accepted.text

        expected = {
            "type": {"food": 2, "prescription": 1, "befriending": 1, "financial": 1},
            "district": {"thanet": 3, "canterbury": 1, "out-of-area": 1},
            "channel": {"phone": 3, "online": 1, "partner": 1},
            "status": {"fulfilled": 1, "accepted": 1, "routed": 2, "out_of_area": 1},
        }

        async def figures() -> dict:
            found = {}
            for group in expected:
                response = await reporting.get(
                    "/v1/figures/requests", params={"group_by": group}, headers=analyst(reporting_cfg)
                )
                found[group] = by(response.json()["rows"], group)
            return found

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (seen := await figures()) != expected:
            assert loop.time() < deadline, f"reporting shows {seen}"
            await asyncio.sleep(0.1)

        as_csv = await reporting.get(
            "/v1/figures/requests", params={"group_by": "district", "format": "csv"}, headers=analyst(reporting_cfg)
        )
        assert {r["district"]: int(r["count"]) for r in csv.DictReader(io.StringIO(as_csv.text))} == expected[
            "district"
        ]
        odata = await reporting.get(
            "/odata/RequestFacts",
            params={"$filter": "status eq 'fulfilled'", "$count": "true"},
            headers=analyst(reporting_cfg),
        )
        [fact] = odata.json()["value"]
        assert odata.json()["@odata.count"] == 1 and (
            fact["district"],
            fact["hub"],
            fact["channel"],
            fact["outcome"],
        ) == ("thanet", "thanet", "phone", "delivered")
        referrals_by_channel = await reporting.get(
            "/v1/figures/referrals", params={"group_by": "channel"}, headers=analyst(reporting_cfg)
        )
        assert by(referrals_by_channel.json()["rows"], "channel") == {"phone": 2, "online": 1, "partner": 1}

        env = {
            "REPORTING_DATABASE_URL": databases["reporting"],
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "REPORTING_CONSUMER_GROUP": reporting_cfg.consumer_group,
            "KT_VAR_DIR": str(var_dir),
            "KT_TOPIC_REQUEST_STATS": topics.request_stats,
            "KT_TOPIC_ASSIGNMENT_STATUS": topics.assignment_status,
            "KT_TOPIC_ACTIONS": topics.actions,
            "KT_LOG_JSON": "false",
        }
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["replay"], env=env)
        assert result.exit_code == 0, result.output
        assert "replayed 14 events" in result.output, result.output
        assert await figures() == expected

        # The broker lost everything (an embedded broker restarted: here, topics never written to):
        # the replay is refused and changes nothing.
        fresh = {
            "KT_TOPIC_REQUEST_STATS": f"{topics.request_stats}.fresh",
            "KT_TOPIC_ASSIGNMENT_STATUS": f"{topics.assignment_status}.fresh",
            "KT_TOPIC_ACTIONS": f"{topics.actions}.fresh",
        }
        await ensure_topics(broker.bootstrap_servers, {name: 3 for name in fresh.values()})
        result = await asyncio.to_thread(CliRunner().invoke, cli, ["replay"], env={**env, **fresh})
        assert result.exit_code == 1, result.output
        assert "replay refused" in result.output and "kent-together republish" in result.output, result.output
        assert await figures() == expected

        # Each producing service publishes its current state again (its running relay sends it), and the
        # replay from those topics alone gives the same figures.
        for service, database in (("referrals", databases["referrals"]), ("fulfilment", databases["fulfilment"])):
            result = await asyncio.to_thread(
                CliRunner().invoke,
                cli,
                ["republish", service],
                env={**env, **fresh, f"{service.upper()}_DATABASE_URL": database},
            )
            assert result.exit_code == 0, result.output
        assert "5 records' current state" in result.output  # fulfilment: five assignments
        for _ in range(100):
            result = await asyncio.to_thread(CliRunner().invoke, cli, ["replay"], env={**env, **fresh})
            if result.exit_code == 0:
                break
            await asyncio.sleep(0.1)  # the relays have not sent everything yet
        assert result.exit_code == 0, result.output
        assert await figures() == expected

    stored = b"".join(path.read_bytes() for path in var_dir.parent.glob("reporting.db*"))
    for name, phone, postcode, _, _ in RESIDENTS:
        for secret in (name, name.split()[1], phone, phone.replace(" ", "")[1:], postcode, postcode.replace(" ", "")):
            assert secret.encode() not in stored, f"{secret!r} is in the reporting database"
    assert b"Priya Shah" not in stored and b"Northdown" not in stored
