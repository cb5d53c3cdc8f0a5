"""End-to-end: the suite started the way `make run` starts it, driven over HTTP and Kafka."""

from __future__ import annotations

import pytest

from shared.bus import free_port
from tests.support.suite import ROOT, Suite, port_offset, wait_until_up  # noqa: F401  (the e2e tests import these from here)


@pytest.fixture
def suite(tmp_path):
    instance = Suite(var_dir=tmp_path / "var", port_offset=port_offset("e2e"), broker_port=free_port())
    yield instance
    instance.stop()
