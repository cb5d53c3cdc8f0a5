"""`Idempotency-Key` on every POST: a client that retries after a timeout gets the first answer, not a second write.

The semantics are the IETF draft's (draft-ietf-httpapi-idempotency-key-header)
and the referral intake's: a key is the caller's (the token's subject) and
names one request. The same key with the same request (method, path, query,
content type and body) gets the first answer again, with `Idempotent-Replayed:
true`; with another request it is a 422 `idempotency-key-reused`; while the
first is still running, a 409. A 5xx, a 409 or a 429 is not kept: the request
did not happen, so a retry runs it. Keys are kept for `retention` (24 hours by
default), then forgotten.

The key is an RFC 8941 sf-string (`Idempotency-Key: "8e03978e-40d5-43e8-bc93-6894a57f9324"`);
a bare token of printable ASCII (`call-0001`) is taken too, as it always was.

Where the answer is kept: the service's own database, table `idempotency_keys`,
sealed with the service's data keys where the service holds personal data (a
case note's answer is a case note). The answer is kept after the change has
committed, not in its transaction: if the process dies between the two, the
key stays claimed and unanswered, and a retry gets 409 `idempotency-key-unfinished`
saying the outcome is unknown (never a second write).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Column, Index, Integer, LargeBinary, MetaData, String, Table, delete, insert, select, update
from sqlalchemy.engine import CursorResult
from sqlalchemy.exc import IntegrityError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.crypto import CryptoError, Keyring
from shared.db import Database, UtcDateTime, utcnow
from shared.errors import Conflict, DomainError, ValidationFailed
from shared.http_errors import send_domain_error

if TYPE_CHECKING:
    from alembic.operations import Operations
    from starlette.applications import Starlette

    from shared.auth import TokenVerifier


MAX_LENGTH = 200
HEADER = "Idempotency-Key"
REPLAYED = (b"idempotent-replayed", b"true")
_KEPT_HEADERS = {b"content-type", b"location", b"etag", b"last-modified"}


class IdempotencyKeyReused(ValidationFailed):
    """A field error as every other is: `errors` names the field (the header), so clients read it as they read the rest."""

    slug, title = "idempotency-key-reused", "Idempotency-Key already used for another body"

    def __init__(self, detail: str = ""):
        super().__init__(
            [{"field": HEADER, "in": "header", "reason": "already used with another request: use a new key"}],
            detail=detail or self.title,
        )


class IdempotencyKeyInFlight(Conflict):
    slug, title = "idempotency-key-in-flight", "A request with this Idempotency-Key is still running"


class IdempotencyKeyUnfinished(Conflict):
    slug, title = "idempotency-key-unfinished", "A request with this Idempotency-Key did not finish"


def idempotency_table(metadata: MetaData) -> Table:
    return Table(
        "idempotency_keys",
        metadata,
        Column("client", String(200), primary_key=True),
        Column("key", String(MAX_LENGTH), primary_key=True),
        Column("request_hash", String(64), nullable=False),
        Column("status", Integer, nullable=True),  # None while the first request runs
        # The answer's headers and body, sealed where the service holds personal data.
        Column("response", LargeBinary, nullable=True),
        Column("created_at", UtcDateTime, nullable=False),
        Index("ix_idempotency_keys_created_at", "created_at"),
    )


def parse_key(value: str) -> str:
    """The key an `Idempotency-Key` header carries; ValidationFailed when it is not one."""
    text = value.strip()
    if text.startswith('"'):
        key, rest, escaped = [], text[1:], False
        for position, char in enumerate(rest):
            if escaped:
                if char not in '"\\':
                    break
                key.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                if rest[position + 1 :].strip() and not rest[position + 1 :].lstrip().startswith(";"):
                    break  # parameters (`;x=1`) are allowed by the draft and ignored; anything else is not
                return _checked("".join(key))
            elif " " <= char <= "~":
                key.append(char)
            else:
                break
        raise _invalid("not a structured-field string: a quoted string of printable ASCII")
    if not text or any(not ("!" <= char <= "~") for char in text):
        raise _invalid('a quoted string ("…") or a token of printable ASCII without spaces')
    return _checked(text)


def _checked(key: str) -> str:
    if not key:
        raise _invalid("must not be empty")
    if len(key) > MAX_LENGTH:
        raise _invalid(f"at most {MAX_LENGTH} characters")
    return key


def _invalid(reason: str) -> ValidationFailed:
    return ValidationFailed([{"field": HEADER, "reason": reason, "in": "header"}])


class IdempotencyKeys:
    """Claims, answers and forgets keys in one service's `idempotency_keys` table."""

    def __init__(
        self,
        *,
        db: Database,
        table: Table,
        keyring: Keyring | None,
        retention: timedelta = timedelta(hours=24),
        unfinished_after: timedelta = timedelta(minutes=5),
    ):
        self.db = db
        self.table = table
        self.keyring = keyring
        self.retention = retention
        self.unfinished_after = unfinished_after
        """A claim older than this with no answer is taken as a request that died mid-way."""
        self._last_purge = 0.0

    async def claim(
        self, *, client: str, key: str, request_hash: str
    ) -> tuple[int, list[tuple[bytes, ...]], bytes] | None:
        """None when this request may run (the key is now claimed); the first answer when it is a retry.

        IdempotencyKeyReused, IdempotencyKeyInFlight or IdempotencyKeyUnfinished otherwise.
        """
        await self._purge_now_and_then()
        t = self.table
        try:
            async with self.db.sessions() as session, session.begin():
                await session.execute(
                    insert(t).values(client=client, key=key, request_hash=request_hash, created_at=utcnow())
                )
            return None
        except IntegrityError:
            pass
        async with self.db.sessions() as session:
            row = (
                await session.execute(
                    select(t.c.request_hash, t.c.status, t.c.response, t.c.created_at).where(
                        t.c.client == client, t.c.key == key
                    )
                )
            ).one_or_none()
        if row is None:  # forgotten between the insert and the read: claim again
            return await self.claim(client=client, key=key, request_hash=request_hash)
        if row.request_hash != request_hash:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different request; use a new key for a new request"
            )
        if row.status is None:
            if utcnow() - row.created_at > self.unfinished_after:
                raise IdempotencyKeyUnfinished(
                    "the first request with this key did not finish, and whether it took effect is unknown: "
                    "look at the resource before sending it again with a new key"
                )
            raise IdempotencyKeyInFlight("the first request with this key is still running; retry shortly")
        try:
            kept = self.keyring.open(row.response) if self.keyring else row.response
        except CryptoError:  # sealed with a data key since retired (a rotation finished within the day)
            raise IdempotencyKeyUnfinished(
                "the first answer to this key can no longer be read: look at the resource before sending it "
                "again with a new key"
            ) from None
        headers, body = _decode(kept)
        return row.status, headers, body

    async def answer(
        self, *, client: str, key: str, status: int, headers: list[tuple[bytes, bytes]], body: bytes
    ) -> None:
        """Keep the answer for retries; a transient one (5xx, 409, 429) releases the key instead."""
        t = self.table
        where = (t.c.client == client) & (t.c.key == key)
        async with self.db.sessions() as session, session.begin():
            if status >= 500 or status in (409, 429):
                await session.execute(delete(t).where(where))
                return
            kept = _encode([(k, v) for k, v in headers if k.lower() in _KEPT_HEADERS], body)
            await session.execute(
                update(t).where(where).values(status=status, response=self.keyring.seal(kept) if self.keyring else kept)
            )

    async def release(self, *, client: str, key: str) -> None:
        t = self.table
        async with self.db.sessions() as session, session.begin():
            await session.execute(delete(t).where(t.c.client == client, t.c.key == key))

    async def purge(self) -> int:
        async with self.db.sessions() as session, session.begin():
            result = await session.execute(
                delete(self.table).where(self.table.c.created_at < utcnow() - self.retention)
            )
        return cast("CursorResult[Any]", result).rowcount or 0

    async def _purge_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._last_purge > 600:
            self._last_purge = now
            await self.purge()


def request_hash(scope: Scope, body: bytes) -> str:
    """What makes two requests the same request: method, path, query, content type and body."""
    digest = hashlib.sha256()
    content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
    for part in (scope["method"].encode(), scope["path"].encode(), scope.get("query_string", b""), content_type):
        digest.update(len(part).to_bytes(4, "big") + part)
    digest.update(body)
    return digest.hexdigest()


def _encode(headers: Iterable[tuple[bytes, ...]], body: bytes) -> bytes:
    head = b"\n".join(k + b": " + v for k, v in headers)
    return len(head).to_bytes(4, "big") + head + body


def _decode(raw: bytes) -> tuple[list[tuple[bytes, ...]], bytes]:
    size = int.from_bytes(raw[:4], "big")
    head, body = raw[4 : 4 + size], raw[4 + size :]
    headers = [tuple(line.split(b": ", 1)) for line in head.split(b"\n") if line]
    return headers, body


class IdempotentPosts:
    """Pure ASGI middleware: every POST with an `Idempotency-Key` runs once per caller and key.

    Inside the hardening middleware, so the body has passed its size limit. A
    request without a valid token goes on as it came: the app answers it 401.
    `own_paths` handle the key themselves (the referral intake keeps it with the referral).
    """

    def __init__(
        self, app: ASGIApp, *, keys_of: Callable[[Starlette], IdempotencyKeys], own_paths: frozenset[str] = frozenset()
    ) -> None:
        self.app = app
        self.keys_of = keys_of
        """The running app's `IdempotencyKeys` (built with the runtime, after the middleware)."""
        self.own_paths = own_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] in self.own_paths:
            return await self.app(scope, receive, send)
        header = next((v for k, v in scope["headers"] if k == b"idempotency-key"), None)
        if header is None:
            return await self.app(scope, receive, send)
        client = await self._client(scope)
        if client is None:
            return await self.app(scope, receive, send)
        try:
            key = parse_key(header.decode("latin-1"))
        except DomainError as error:
            return await send_domain_error(scope, send, error)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
        keys = self.keys_of(scope["app"])
        try:
            first = await keys.claim(client=client, key=key, request_hash=request_hash(scope, body))
        except DomainError as error:
            return await send_domain_error(scope, send, error)
        if first is not None:
            status, headers, kept_body = first
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [*headers, (b"content-length", str(len(kept_body)).encode()), REPLAYED],
                }
            )
            await send({"type": "http.response.body", "body": kept_body})
            return
        await self._run_once(scope, body, send, keys=keys, client=client, key=key)

    async def _run_once(
        self, scope: Scope, body: bytes, send: Send, *, keys: IdempotencyKeys, client: str, key: str
    ) -> None:
        delivered = False

        async def replay_receive() -> Message:
            nonlocal delivered
            if delivered:
                return {"type": "http.disconnect"}
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        headers: list[tuple[bytes, bytes]]
        chunks: list[bytes]
        status, headers, chunks = 500, [], []

        async def keeping_send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, replay_receive, keeping_send)
        except BaseException:
            await keys.release(client=client, key=key)
            raise
        await keys.answer(client=client, key=key, status=status, headers=headers, body=b"".join(chunks))

    @staticmethod
    async def _client(scope: Scope) -> str | None:
        scheme, _, token = (
            next((v for k, v in scope["headers"] if k == b"authorization"), b"").decode("latin-1").partition(" ")
        )
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            return (await cast("TokenVerifier", scope["app"].state.verifier).authenticate(token)).subject
        except Exception:  # the app answers it (401, 503) as it answers any request
            return None


def create_idempotency_table(op: Operations) -> None:
    """The migration step every service that takes POSTs runs once (its own revision)."""
    import sqlalchemy as sa

    import shared.db

    op.create_table(
        "idempotency_keys",
        sa.Column("client", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=MAX_LENGTH), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("response", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", shared.db.UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("client", "key"),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def drop_idempotency_table(op: Operations) -> None:
    op.drop_index("ix_idempotency_keys_created_at", table_name="idempotency_keys")
    op.drop_table("idempotency_keys")
