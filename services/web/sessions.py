"""Server-side sessions: the browser holds an opaque random cookie, the web service everything else.

A session is a row in `web_sessions`, keyed by the SHA-256 of the cookie and
sealed with the data keys (a resident's answers between pages are personal
data). It ends after `idle` without a request, and `absolute` after it began,
whichever is first; signing in starts a new one (no session fixation).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, insert, select, update

from services.web.models import sessions
from shared.crypto import Keyring
from shared.db import Database, utcnow

COOKIE = "kt_session"


def _digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


@dataclass
class Session:
    cookie: str
    data: dict = field(default_factory=dict)
    created_at: datetime | None = None
    stored: bool = False
    changed: bool = False
    ended: bool = False

    @property
    def user(self) -> dict | None:
        """Who is signed in: {"sub", "name", "role", "hub", "via"}, or None."""
        return self.data.get("user")

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    def set(self, key: str, value) -> None:
        self.data[key] = value
        self.changed = True

    def pop(self, key: str, default=None):
        self.changed = self.changed or key in self.data
        return self.data.pop(key, default)

    def csrf_token(self) -> str:
        """This session's form token (made on first use, so every form of the session carries the same one)."""
        token = self.data.get("csrf")
        if token is None:
            token = secrets.token_urlsafe(32)
            self.set("csrf", token)
        return token


class SessionStore:
    def __init__(self, db: Database, keyring: Keyring, *, idle: timedelta, absolute: timedelta, clock=utcnow):
        self.db = db
        self.keyring = keyring
        self.idle = idle
        self.absolute = absolute
        self.clock = clock

    def new(self, data: dict | None = None) -> Session:
        return Session(cookie=secrets.token_urlsafe(32), data=dict(data or {}), changed=bool(data))

    async def load(self, cookie: str | None) -> tuple[Session | None, bool]:
        """The live session this cookie names, and whether the cookie named one that has ended."""
        if not cookie or len(cookie) > 100:
            return None, False
        now = self.clock()
        async with self.db.sessions() as db:
            row = (await db.execute(select(sessions).where(sessions.c.id == _digest(cookie)))).mappings().first()
            if row is None:
                return None, False
            if row["expires_at"] <= now or row["last_seen_at"] + self.idle <= now:
                await db.execute(delete(sessions).where(sessions.c.id == row["id"]))
                await db.commit()
                return None, True
            data = self.keyring.open_json(row["data"])
        return Session(cookie=cookie, data=data, created_at=row["created_at"], stored=True), False

    async def save(self, session: Session) -> None:
        """Store what changed, and that the session was used now (which keeps it from going idle)."""
        now = self.clock()
        async with self.db.sessions() as db:
            if session.ended:
                await db.execute(delete(sessions).where(sessions.c.id == _digest(session.cookie)))
            elif session.stored:
                values = {"last_seen_at": now}
                if session.changed:
                    values["data"] = self.keyring.seal_json(session.data)
                await db.execute(update(sessions).where(sessions.c.id == _digest(session.cookie)).values(**values))
            else:
                session.created_at = now
                await db.execute(
                    insert(sessions).values(
                        id=_digest(session.cookie),
                        data=self.keyring.seal_json(session.data),
                        created_at=now,
                        last_seen_at=now,
                        expires_at=now + self.absolute,
                    )
                )
                session.stored = True
            await db.commit()

    async def forget_expired(self) -> int:
        now = self.clock()
        async with self.db.sessions() as db:
            result = await db.execute(
                delete(sessions).where((sessions.c.expires_at <= now) | (sessions.c.last_seen_at <= now - self.idle))
            )
            await db.commit()
            return result.rowcount or 0
