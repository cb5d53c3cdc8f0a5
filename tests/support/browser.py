"""A real headless Chromium looking at a page served by a real server in this event loop."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import uvicorn

from shared.bus import free_port

CHROMIUM = "/usr/bin/chromium"


def chromium() -> str:
    """The browser's path; fails (never skips) when it is missing: `make test` installs it."""
    found = shutil.which("chromium") or (CHROMIUM if Path(CHROMIUM).exists() else None)
    assert found, "Chromium is not installed: run `make test` as root, or `apt-get install chromium`"
    return found


@contextlib.asynccontextmanager
async def serving(app):
    """The app behind a real HTTP server on a free port, in this event loop; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def run_chromium(
    url: str,
    *,
    profile: Path,
    screenshot: Path | None = None,
    width: int = 1280,
    height: int = 1500,
    wait_ms: int = 8000,
) -> str:
    """The DOM after the page's scripts ran (or a screenshot of it)."""
    args = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        f"--virtual-time-budget={wait_ms}",
    ]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    process = await asyncio.create_subprocess_exec(
        *args, url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=90)
    assert process.returncode == 0, err.decode()[-2000:]
    return out.decode()
