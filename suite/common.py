"""What several commands print or need: a console, a database URL without its password, who runs them."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console


def console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def operator() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no user name in a bare container: the command still runs
        return "unknown"
