"""`kent-together demo` against the suite as `make run` starts it: minted tokens, real ports, the summary."""

import subprocess
import sys
from collections import Counter

import httpx

from tests.e2e.conftest import ROOT

REFERRALS, FULFILMENT = 8001, 8002


def test_the_demo_command_loads_the_running_suite_and_says_exactly_what_it_did(suite):
    suite.start("referrals", "fulfilment")
    command = [
        sys.executable,
        "-m",
        "suite.cli",
        "demo",
        "--referrals",
        "12",
        "--requests",
        "16",
        "--districts",
        "thanet,dover",
        "--hub-activity",
        "fulfilled=0.5,unable=0.25",
        "--seed",
        "7",
    ]
    result = subprocess.run(
        command, cwd=ROOT, env={**suite.env, "COLUMNS": "200"}, capture_output=True, text=True, timeout=180
    )
    said = " ".join(result.stderr.split())
    assert result.returncode == 0, said
    assert "referrals posted: 12 of 12 (201; 0 of them replays of an earlier run), requests: 16" in said
    assert "no failures" in said

    admin = {"Authorization": f"Bearer {suite.token('admin')}"}
    statuses = Counter()
    for hub in ("thanet", "dover"):
        response = httpx.get(
            f"{suite.url(FULFILMENT)}/v1/hubs/{hub}/assignments", params={"closed": "true"}, headers=admin, timeout=10
        )
        statuses.update(item["status"] for item in response.json()["items"])
    assert statuses == Counter({"fulfilled": 8, "unable_to_fulfil": 4, "routed": 4})
