"""The dashboard page: `dashboard.html` as served, with the policy that lets run only its own inline code."""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from importlib import resources

HEADERS = {"Cache-Control": "no-cache", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer"}


@functools.cache
def page() -> tuple[str, str]:
    """The page, and a Content-Security-Policy that allows its own inline script and style (by their hashes)."""
    html = resources.files("services.reporting").joinpath("dashboard.html").read_text()

    def hashes(tag: str) -> str:
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in bodies)

    policy = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return html, policy
