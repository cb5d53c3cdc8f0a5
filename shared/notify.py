"""Telling people: emails and texts through GOV.UK Notify, for any service, each sent once.

1. A use case (or a consumer of the service's own events, with its inbox) calls
   `enqueue(uow, table, Message(...))` in the transaction of the change that
   causes the message. A message has a `reference`: a stable id of what it is
   about, derived from the event (`reference_for`), so the same thing told twice
   (an event redelivered or republished) is one message — `enqueue` adds nothing
   for a reference it already holds.
2. A `NotificationWorker` (in the service, or `python -m shared.notify` as a
   process of its own) sends due messages, and logs each attempt in the
   delivery log (`notification_attempts`).

Never twice: before calling Notify the worker commits the message as `sending`
with a lease. If the worker dies mid-send (kill -9) the outcome is unknown; when
the lease runs out, the next attempt first asks Notify for notifications with
that reference (`get_all_notifications(reference=...)`) and, if Notify has one,
records it as sent instead of sending again. The lease is longer than the
client's timeout, so a request still in flight has finished (or failed) at
Notify before anyone asks. A 5xx or a timeout is treated the same way (outcome
unknown); a 429 is known not sent; a 400 (a bad address or number, a wrong
template) is final and not retried. Retries back off (base, 2×, 4×… an hour at
most) and stop after `max_attempts`.

A resident's address and placeholders are sealed at rest (`enqueue(..., sealed=True)`, the unit of work's
keyring; the worker, given the keyring, opens them only to send), and `forget(uow, table, about=...)` blanks
them on erasure (a message not sent yet is then never sent).

In the embedded default (no API key) nothing leaves the machine: `LocalLog`
writes each message as a JSON line to `var/notifications.log` and answers the
reference look-up from that file, so the same rules hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, cast

import orjson
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, SecretStr
from sqlalchemy import (
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import require
from shared.crypto import Keyring, is_sealed
from shared.db import BigId, Database, UtcDateTime, utcnow
from shared.lifecycle import StopsBetweenRounds

if TYPE_CHECKING:
    from alembic.operations import Operations
    from notifications_python_client.errors import APIError
    from sqlalchemy.sql.elements import Case

    from shared.uow import UnitOfWork


log = logging.getLogger(__name__)

Channel = Literal["email", "sms"]
GOVUK_NOTIFY = "https://api.notifications.service.gov.uk"
REFERENCE_NAMESPACE = uuid.UUID("6c1b6a57-4b8e-4f55-9a53-2f4b1d0a7e31")


def reference_for(*parts: Any) -> str:
    """A stable reference for a message about `parts` (e.g. "routed", an assignment id, a hub, a time).

    A UUID: it says nothing about anyone, and Notify keeps it with the notification.
    """
    return str(uuid.uuid5(REFERENCE_NAMESPACE, "|".join(str(part) for part in parts)))


# --- tables -----------------------------------------------------------------------------------


def notification_tables(metadata: MetaData) -> tuple[Table, Table]:
    """The service's messages to send, and the log of every attempt to send them."""
    notifications = Table(
        "notifications",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("reference", String(100), nullable=False, unique=True),
        Column("channel", String(10), nullable=False),
        # The address and the placeholders' values: UTF-8 (and JSON), sealed where they are a resident's.
        Column("recipient", LargeBinary, nullable=False),
        Column("template", String(100), nullable=False),  # its name: the Notify id is the settings' at sending
        Column("personalisation", LargeBinary, nullable=False),
        Column("about", String(200)),  # what it is about, for the log's readers (an assignment id): nothing personal
        # pending (to send), sending (an attempt's outcome unknown until its lease ends), sent, failed
        Column("status", String(20), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("next_attempt_at", UtcDateTime, nullable=False),
        Column("created_at", UtcDateTime, nullable=False),
        Column("sent_at", UtcDateTime),
        Column("notify_id", String(100)),
        Column("last_error", Text),
        Index("ix_notifications_due", "status", "next_attempt_at"),
    )
    attempts = Table(
        "notification_attempts",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("notification_id", BigId, ForeignKey("notifications.id"), nullable=False, index=True),
        Column("at", UtcDateTime, nullable=False),
        # sent, found (sent by an earlier attempt: not sent again), refused (400: final), retry, gave-up
        Column("outcome", String(20), nullable=False),
        Column("status_code", Integer),
        Column("detail", Text),
    )
    return notifications, attempts


def create_notification_tables(op: Operations) -> None:
    """The migration step of a service that starts sending notifications (its own revision)."""
    import sqlalchemy as sa

    import shared.db

    op.create_table(
        "notifications",
        sa.Column("id", shared.db.BigId, autoincrement=True, nullable=False),
        sa.Column("reference", sa.String(length=100), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("recipient", sa.LargeBinary(), nullable=False),
        sa.Column("template", sa.String(length=100), nullable=False),
        sa.Column("personalisation", sa.LargeBinary(), nullable=False),
        sa.Column("about", sa.String(length=200), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", shared.db.UtcDateTime(), nullable=False),
        sa.Column("created_at", shared.db.UtcDateTime(), nullable=False),
        sa.Column("sent_at", shared.db.UtcDateTime(), nullable=True),
        sa.Column("notify_id", sa.String(length=100), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("reference"),
    )
    op.create_index("ix_notifications_due", "notifications", ["status", "next_attempt_at"])
    op.create_table(
        "notification_attempts",
        sa.Column("id", shared.db.BigId, autoincrement=True, nullable=False),
        sa.Column("notification_id", shared.db.BigId, nullable=False),
        sa.Column("at", shared.db.UtcDateTime(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["notification_id"], ["notifications.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notification_attempts_notification_id", "notification_attempts", ["notification_id"])


def drop_notification_tables(op: Operations) -> None:
    op.drop_index("ix_notification_attempts_notification_id", table_name="notification_attempts")
    op.drop_table("notification_attempts")
    op.drop_index("ix_notifications_due", table_name="notifications")
    op.drop_table("notifications")


# --- writing one ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    reference: str
    """Stable for what the message is about (`reference_for`): one message per reference, ever."""
    channel: Channel
    to: str
    """An email address or a mobile number."""
    template: str
    """The template's name in the settings' `notify_templates` (e.g. "hub-today-request")."""
    personalisation: Mapping[str, str] = field(default_factory=dict)
    about: str | None = None


async def enqueue(uow: UnitOfWork, table: Table, message: Message, *, sealed: bool = False) -> bool:
    """Add the message to the unit of work's transaction; False (and nothing added) if its reference is known.

    `sealed`: the address and personalisation are a resident's, sealed with the unit of work's keyring
    (the worker opens them only to send; `forget` blanks them on erasure).
    """
    known = await uow.session.scalar(select(table.c.id).where(table.c.reference == message.reference))
    if known is not None:
        return False
    recipient, personalisation = message.to.encode(), orjson.dumps(dict(message.personalisation))
    if sealed:
        assert uow.keyring is not None  # sealing is asked only of a service holding personal data (with keys)
        recipient, personalisation = uow.keyring.seal(recipient), uow.keyring.seal(personalisation)
    now = uow.now()
    await uow.insert_rows(  # with the transaction's other inserts (on SQLite in one go, shared/uow.py)
        table,
        [
            {
                "reference": message.reference,
                "channel": message.channel,
                "recipient": recipient,
                "template": message.template,
                "personalisation": personalisation,
                "about": message.about,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
        ],
    )
    return True


async def forget(uow: UnitOfWork, table: Table, *, about: str) -> int:
    """Erasure: the address and personalisation of every message about `about` blanked (a message not sent
    yet is not sent). Returns how many."""
    result = await uow.session.execute(
        update(table)
        .where(table.c.about == about)
        .values(recipient=b"", personalisation=b"{}", status=case_unsent(table))
    )
    return cast("CursorResult[Any]", result).rowcount


def case_unsent(table: Table) -> Case[Any]:
    from sqlalchemy import case

    return case((table.c.status.in_(("pending", "sending")), "failed"), else_=table.c.status)


# --- settings ---------------------------------------------------------------------------------


class NotifySettings(BaseModel):
    """Mixed into a service's settings (`<SERVICE>_NOTIFY_…`)."""

    notify_api_key: SecretStr = SecretStr("")
    """GOV.UK Notify's API key (`name-serviceid-secret`); empty: messages go to `notify_log_file` only."""
    notify_base_url: str = GOVUK_NOTIFY
    notify_templates: dict[str, str] = {}
    """Template names to Notify template ids, e.g. {"hub-today-request": "f33517ff-…"} (JSON)."""
    notify_log_file: Path | None = None
    """Where messages are written when there is no API key; default var/notifications.log."""
    run_notifications: bool = True
    """Send in this process (turn off where `python -m shared.notify` runs as a process of its own)."""
    notify_poll_seconds: float = 1.0
    notify_timeout_seconds: float = 10.0
    notify_max_attempts: int = 10
    notify_backoff_seconds: float = 5.0
    """The first retry's wait; each later one doubles it, up to an hour."""


class SenderSettings(Protocol):
    """What `sender_from_settings` reads: NotifySettings, mixed into a service's settings."""

    notify_api_key: SecretStr
    notify_base_url: str
    notify_timeout_seconds: float
    notify_log_file: Path | None
    var_dir: Path


class WorkerSettings(SenderSettings, Protocol):
    """What `NotificationWorker.from_settings` reads."""

    notify_templates: dict[str, str]
    notify_poll_seconds: float
    notify_max_attempts: int
    notify_backoff_seconds: float


def sender_from_settings(settings: SenderSettings) -> Sender:
    key = settings.notify_api_key.get_secret_value()
    if key:
        return GovukNotify(api_key=key, base_url=settings.notify_base_url, timeout=settings.notify_timeout_seconds)
    return LocalLog(settings.notify_log_file or Path(settings.var_dir) / "notifications.log")


# --- senders ----------------------------------------------------------------------------------


class Refused(Exception):
    """Notify will never take this message (400: a bad address or number, an unknown template)."""

    def __init__(self, status_code: int | None, detail: str):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


class NotSent(Exception):
    """This attempt failed; `unknown` if Notify may have taken it all the same (a timeout, a 5xx)."""

    def __init__(self, status_code: int | None, detail: str, *, unknown: bool):
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.unknown = unknown


class Sender(Protocol):
    async def send(self, message: Message, *, template_id: str) -> str:
        """Send it; Notify's id for it. Raises Refused or NotSent."""

    async def find(self, reference: str) -> str | None:
        """Notify's id of a notification sent with this reference, if there is one. Raises NotSent."""


class GovukNotify:
    """The real client (notifications-python-client, synchronous: run in a thread)."""

    def __init__(self, *, api_key: str, base_url: str = GOVUK_NOTIFY, timeout: float = 10.0):
        from notifications_python_client.notifications import NotificationsAPIClient

        self.client = NotificationsAPIClient(api_key, base_url=base_url, timeout=timeout)  # type: ignore[no-untyped-call]  # notifications-python-client ships no annotations

    async def send(self, message: Message, *, template_id: str) -> str:
        def call() -> Any:
            personalisation = dict(message.personalisation) or None
            if message.channel == "email":
                return self.client.send_email_notification(  # type: ignore[no-untyped-call]  # notifications-python-client ships no annotations
                    email_address=message.to,
                    template_id=template_id,
                    personalisation=personalisation,
                    reference=message.reference,
                )
            return self.client.send_sms_notification(  # type: ignore[no-untyped-call]  # notifications-python-client ships no annotations
                phone_number=message.to,
                template_id=template_id,
                personalisation=personalisation,
                reference=message.reference,
            )

        answer = await self._call(call, sending=True)
        return str(answer["id"])

    async def find(self, reference: str) -> str | None:
        answer = await self._call(
            lambda: self.client.get_all_notifications(reference=reference),  # type: ignore[no-untyped-call]  # notifications-python-client ships no annotations
            sending=False,
        )
        found = [n for n in answer.get("notifications", []) if n.get("reference") == reference]
        return str(found[0]["id"]) if found else None

    @staticmethod
    async def _call(call: Callable[[], Any], *, sending: bool) -> Any:
        from notifications_python_client.errors import APIError

        try:
            return await asyncio.to_thread(call)
        except APIError as error:
            status, detail = error.status_code, _detail(error)
            if status == 400 and sending:
                raise Refused(status, detail) from None
            # 429: Notify refused it, known unsent. 403 (a bad key), 5xx, no answer: it may have taken it.
            raise NotSent(status, detail, unknown=status != 429) from None


def _detail(error: APIError) -> str:
    message = error.message
    if isinstance(message, list):
        return "; ".join(f"{m.get('error')}: {m.get('message')}" for m in message if isinstance(m, dict))[:500]
    return str(message)[:500]


class LocalLog:
    """Messages written as JSON lines to a local file: the embedded default, where nothing leaves the machine."""

    def __init__(self, path: Path):
        self.path = Path(path)

    async def send(self, message: Message, *, template_id: str) -> str:
        notify_id = str(uuid.uuid4())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(
            {
                "id": notify_id,
                "at": utcnow().isoformat(),
                "reference": message.reference,
                "channel": message.channel,
                "to": message.to,
                "template": message.template,
                "template_id": template_id,
                "personalisation": dict(message.personalisation),
            }
        )
        torn = self.path.exists() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n")
        with self.path.open("a", encoding="utf-8") as out:
            out.write(("\n" if torn else "") + line + "\n")  # a line torn by a crash stays a line of its own
        return notify_id

    async def forget(self, references: set[str]) -> int:
        """Erasure: the address and placeholders of these messages blanked in the file; returns how many lines.

        Each line is overwritten in place with one of the same length (the JSON padded with spaces), so a
        process appending to the file meanwhile (another service's worker) loses nothing.
        """
        if not references or not self.path.exists():
            return 0
        blanked = 0
        with self.path.open("r+b") as log_file:
            offset = 0
            for line in log_file.read().split(b"\n"):
                start, offset = offset, offset + len(line) + 1
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if not isinstance(entry, dict) or entry.get("reference") not in references or not entry.get("to"):
                    continue
                entry.update(to="", personalisation={})
                plain = json.dumps(entry).encode()
                if len(plain) <= len(line):
                    log_file.seek(start)
                    log_file.write(plain.ljust(len(line)))
                    blanked += 1
        return blanked

    async def find(self, reference: str) -> str | None:
        if not self.path.exists():
            return None
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line torn by a crash mid-write was not a message sent
            if entry.get("reference") == reference:
                notify_id: str = entry["id"]
                return notify_id
        return None


# --- the worker -------------------------------------------------------------------------------


def backoff(attempts: int, *, base_seconds: float, cap_seconds: float = 3600.0) -> timedelta:
    """Wait before the next try after `attempts` failures: base, 2×base, 4×base… up to an hour."""
    return timedelta(seconds=min(cap_seconds, base_seconds * 2 ** max(0, attempts - 1)))


class NotificationWorker(StopsBetweenRounds):
    """Sends due messages; several workers share them (each claim is a compare-and-set with a lease)."""

    def __init__(
        self,
        *,
        db: Database,
        tables: tuple[Table, Table],
        sender: Sender,
        templates: Mapping[str, str],
        poll_seconds: float = 1.0,
        timeout_seconds: float = 10.0,
        max_attempts: int = 10,
        backoff_seconds: float = 5.0,
        batch: int = 20,
        clock: Callable[[], datetime] = utcnow,
        keyring: Keyring | None = None,
    ) -> None:
        self.db = db
        self.keyring = keyring
        """Opens sealed messages (a resident's) just before they are sent."""
        self.notifications, self.attempts = tables
        self.sender = sender
        self.templates = dict(templates)
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.batch = batch
        self.clock = clock
        self.lease = timedelta(seconds=timeout_seconds * 2 + 5)
        """Longer than any call: when it runs out, an attempt in flight has ended, one way or the other."""

    @classmethod
    def from_settings(
        cls, settings: WorkerSettings, *, db: Database, tables: tuple[Table, Table], keyring: Keyring | None
    ) -> NotificationWorker:
        """The worker as a service's `NotifySettings` describe it (its sender, templates, polling and retries)."""
        return cls(
            db=db,
            tables=tables,
            sender=sender_from_settings(settings),
            templates=settings.notify_templates,
            poll_seconds=settings.notify_poll_seconds,
            timeout_seconds=settings.notify_timeout_seconds,
            max_attempts=settings.notify_max_attempts,
            backoff_seconds=settings.notify_backoff_seconds,
            keyring=keyring,
        )

    async def run(self) -> None:
        self.started()
        while True:
            try:
                with self.working():  # a stop lets the messages in hand be sent and recorded
                    done = await self.send_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                task = asyncio.current_task()
                assert task is not None  # run() is a task (Runtime.start_loop)
                if task.cancelling():
                    raise
                log.warning("notifications: a round failed; trying again", exc_info=True)
                done = 0
            if done < self.batch:
                await asyncio.sleep(self.poll_seconds)

    async def send_due(self) -> int:
        """Claim the messages that are due, send each, record what happened; return how many were tried."""
        claimed = await self._claim()
        for row in claimed:
            await self._attempt(row)
        return len(claimed)

    async def _claim(self) -> list[dict[str, Any]]:
        n = self.notifications.c
        now = self.clock()
        query = (
            select(self.notifications)
            .where(n.status.in_(("pending", "sending")), n.next_attempt_at <= now)
            .order_by(n.next_attempt_at, n.id)
            .limit(self.batch)
        )
        async with self.db.sessions() as session, session.begin():
            if self.db.dialect == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = (await session.execute(query)).mappings().all()
            claimed = []
            for row in rows:
                # Committed before the call: if this process dies now, the next attempt knows
                # the outcome is unknown (`sending`) and asks Notify before sending again.
                result = await session.execute(
                    update(self.notifications)
                    .where(n.id == row["id"], n.status == row["status"], n.attempts == row["attempts"])
                    .values(status="sending", attempts=n.attempts + 1, next_attempt_at=now + self.lease)
                )
                if cast("CursorResult[Any]", result).rowcount == 1:
                    claimed.append({**row, "attempts": row["attempts"] + 1, "unknown": row["status"] == "sending"})
            return claimed

    async def _attempt(self, row: dict[str, Any]) -> None:
        try:
            message = Message(
                reference=row["reference"],
                channel=row["channel"],
                to=opened(row["recipient"], self.keyring).decode(),
                template=row["template"],
                personalisation=orjson.loads(opened(row["personalisation"], self.keyring)),
                about=row["about"],
            )
            if not message.to:
                raise Refused(None, "erased before it was sent")
            if row["unknown"]:
                found = await self.sender.find(message.reference)
                if found is not None:
                    return await self._record(
                        row,
                        outcome="found",
                        status="sent",
                        notify_id=found,
                        detail="sent by an earlier attempt; not sent again",
                    )
            template_id = self.templates.get(message.template)
            if not template_id and isinstance(self.sender, LocalLog):
                template_id = f"local:{message.template}"  # the local log needs no template set up in Notify
            if not template_id:
                raise Refused(None, f"no template id for {message.template!r}: set it in notify_templates")
            notify_id = await self.sender.send(message, template_id=template_id)
        except Refused as refused:
            log.warning("notification %s refused: %s", row["id"], refused.detail)
            return await self._record(
                row, outcome="refused", status="failed", status_code=refused.status_code, detail=refused.detail
            )
        except NotSent as failed:
            return await self._retry(row, failed.detail, status_code=failed.status_code, unknown=failed.unknown)
        except Exception as error:  # no answer at all (the network, a bug): the outcome is unknown
            return await self._retry(row, f"{type(error).__name__}: {error}"[:500], status_code=None, unknown=True)
        await self._record(row, outcome="sent", status="sent", notify_id=notify_id)

    async def _retry(self, row: dict[str, Any], detail: str, *, status_code: int | None, unknown: bool) -> None:
        if row["attempts"] >= self.max_attempts:
            log.warning("notification %s failed %d times; giving up: %s", row["id"], row["attempts"], detail)
            return await self._record(row, outcome="gave-up", status="failed", status_code=status_code, detail=detail)
        await self._record(
            row,
            outcome="retry",
            status="sending" if unknown else "pending",
            status_code=status_code,
            detail=detail,
            next_attempt_at=self.clock() + backoff(row["attempts"], base_seconds=self.backoff_seconds),
        )

    async def _record(
        self,
        row: dict[str, Any],
        *,
        outcome: str,
        status: str,
        notify_id: str | None = None,
        status_code: int | None = None,
        detail: str | None = None,
        next_attempt_at: datetime | None = None,
    ) -> None:
        now = self.clock()
        values: dict[str, Any] = {
            "status": status,
            "last_error": detail if outcome in ("retry", "refused", "gave-up") else None,
        }
        if status == "sent":
            values.update(sent_at=now, notify_id=notify_id)
        if next_attempt_at is not None:
            values["next_attempt_at"] = next_attempt_at
        async with self.db.sessions() as session, session.begin():
            await session.execute(
                update(self.notifications).where(self.notifications.c.id == row["id"]).values(**values)
            )
            await session.execute(
                insert(self.attempts).values(
                    notification_id=row["id"], at=now, outcome=outcome, status_code=status_code, detail=detail
                )
            )


def opened(value: bytes, keyring: Keyring | None) -> bytes:
    if not is_sealed(value):
        return value
    if keyring is None:
        raise Refused(None, "the message is sealed and this worker has no data keys")
    return keyring.open(value)


async def delivery_log(session: AsyncSession, tables: tuple[Table, Table], *, limit: int = 100) -> list[dict[str, Any]]:
    """The newest messages with every attempt to send each, newest first."""
    notifications, attempts = tables
    rows = (
        (await session.execute(select(notifications).order_by(notifications.c.id.desc()).limit(limit))).mappings().all()
    )
    ids = [row["id"] for row in rows]
    tries: dict[int, list[dict[str, Any]]] = {}
    if ids:
        for entry in (
            await session.execute(select(attempts).where(attempts.c.notification_id.in_(ids)).order_by(attempts.c.id))
        ).mappings():
            tries.setdefault(entry["notification_id"], []).append(
                {k: entry[k] for k in ("at", "outcome", "status_code", "detail")}
            )
    return [
        {
            **dict(row),
            "recipient": "(sealed)" if is_sealed(row["recipient"]) else row["recipient"].decode(),
            "personalisation": None,
            "log": tries.get(row["id"], []),
        }
        for row in rows
    ]


# --- the delivery log over HTTP ---------------------------------------------------------------


class AttemptOut(BaseModel):
    at: datetime
    outcome: str
    """sent, found (an earlier attempt had sent it: not sent again), refused, retry, gave-up."""
    status_code: int | None = None
    detail: str | None = None


class NotificationOut(BaseModel):
    id: int
    reference: str
    """As given to GOV.UK Notify: look it up there by this."""
    channel: str
    recipient: str
    """The address; `(sealed)` for a resident's (sealed at rest, never shown); empty once erased."""
    template: str
    about: str | None = None
    status: str
    """pending, sending (an attempt's outcome unknown until its lease ends), sent, failed."""
    attempts: int
    created_at: datetime
    sent_at: datetime | None = None
    notify_id: str | None = None
    last_error: str | None = None
    log: list[AttemptOut]


def delivery_log_router(tables: tuple[Table, Table], *, scope: str, summary: str) -> APIRouter:
    """`GET /v1/notifications`: the newest messages, each with every attempt to send it, for callers with `scope`."""
    router = APIRouter(prefix="/v1", tags=["notifications"])

    # The scope as a route dependency: a parameter's annotation could not name this function's `scope`.
    @router.get(
        "/notifications",
        response_model=list[NotificationOut],
        summary=summary,
        dependencies=[Depends(require(scope))],
    )
    async def notification_log(
        request: Request, limit: Annotated[int, Query(ge=1, le=500)] = 100
    ) -> list[dict[str, Any]]:
        async with request.app.state.runtime.uow(reading=True) as uow:
            return await delivery_log(uow.session, tables, limit=limit)

    return router


# --- a process of its own ---------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """`python -m shared.notify --database-url … [--api-key … --base-url …] --templates '{…}'`: the worker alone."""
    parser = argparse.ArgumentParser(prog="python -m shared.notify", description=main.__doc__)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--api-key", default="", help="empty: write to --log-file")
    parser.add_argument("--base-url", default=GOVUK_NOTIFY)
    parser.add_argument("--log-file", default="var/notifications.log")
    parser.add_argument("--templates", default="{}", help="JSON: template names to Notify template ids")
    parser.add_argument("--poll-seconds", type=float, default=1.0)
    parser.add_argument("--timeout-seconds", type=float, default=10.0)
    parser.add_argument("--backoff-seconds", type=float, default=5.0)
    parser.add_argument(
        "--sealed",
        action="store_true",
        help="open sealed messages with the data keys (KT_DATA_KEYS, or var/'s in development)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)

    async def work() -> None:
        db = Database(args.database_url)
        sender = (
            GovukNotify(api_key=args.api_key, base_url=args.base_url, timeout=args.timeout_seconds)
            if args.api_key
            else LocalLog(Path(args.log_file))
        )
        worker = NotificationWorker(
            db=db,
            tables=notification_tables(MetaData()),
            sender=sender,
            templates=json.loads(args.templates),
            poll_seconds=args.poll_seconds,
            timeout_seconds=args.timeout_seconds,
            backoff_seconds=args.backoff_seconds,
            keyring=_keyring() if args.sealed else None,
        )
        try:
            await worker.run()
        finally:
            await db.dispose()

    asyncio.run(work())


def _keyring() -> Keyring:
    from shared.settings import ServiceSettings

    return ServiceSettings().keyring()


if __name__ == "__main__":
    main()
