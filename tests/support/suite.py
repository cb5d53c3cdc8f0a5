"""The suite started the way `make run` starts it: for the end-to-end tests and the fault suite (bench/chaos.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
_SLOTS = {"e2e": 0, "web": 1, "chaos": 2}


def port_offset(use: str) -> int:
    """An offset for a suite's fixed ports (8001 + offset, …) no other suite of this test run can hold.

    Each use and each pytest-xdist worker draws from its own thousand (10000–15999 with two
    workers), so the ports stay below Linux's ephemeral range (32768+), where `free_port()` and
    every client's outgoing connection live.
    """
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    slot = _SLOTS[use] + len(_SLOTS) * worker
    return 10_000 + slot * 1_000 + int.from_bytes(os.urandom(2)) % 1_000


class Suite:
    def __init__(self, *, var_dir: Path, port_offset: int, broker_port: int):
        self.var_dir = var_dir
        self.port_offset = port_offset
        self.broker_port = broker_port
        self.env = {
            **os.environ,
            "KT_VAR_DIR": str(var_dir),
            "KT_PORT_OFFSET": str(port_offset),
            "KT_BROKER_PORT": str(broker_port),
            "KT_LOG_LEVEL": "WARNING",
        }
        self.env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
        self.process: subprocess.Popen | None = None
        self.log = var_dir / "suite.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.broker_port}"

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port + self.port_offset}"

    def start(self, *services: str, timeout: float = 120) -> Suite:
        self.var_dir.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "suite.cli", "run"] + [a for s in services for a in ("--only", s)]
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while b"Ctrl-C stops everything" not in self.log.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the suite did not start:\n" + self.log.read_text()[-3000:])
            time.sleep(0.2)
        return self

    def token(self, role: str, hub: str | None = None) -> str:
        command = [sys.executable, "-m", "suite.cli", "token", "--role", role] + (["--hub", hub] if hub else [])
        return subprocess.run(
            command, cwd=ROOT, env=self.env, capture_output=True, text=True, check=True
        ).stdout.strip()

    def service_pid(self, name: str) -> int:
        """The pid of one service's uvicorn process, a child of the supervisor."""
        out = subprocess.run(
            ["pgrep", "-P", str(self.process.pid), "-f", f"services.{name}.app"], capture_output=True, text=True
        ).stdout.split()
        return int(out[0])

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def wait_until_up(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come back")
