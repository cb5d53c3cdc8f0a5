"""A local HTTP server that speaks GOV.UK Notify's API (v2), for the real notifications-python-client to call.

What it checks as Notify does: the JWT in `Authorization: Bearer` (HS256, signed with the API key's
secret, `iss` the service id, `iat` within 30 seconds), the email address or UK mobile number, the
template id. What it answers as Notify does: 201 with the notification, 400 ValidationError, 403
AuthError, 429 RateLimitError, 500 Exception; and `GET /v2/notifications?reference=` from what it
holds. A test can queue error answers (`fail_next`) and hold a send after Notify has taken it
(`hold_sends`), to kill the sender mid-send.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from notifications_python_client.authentication import decode_jwt_token, get_token_issuer
from notifications_python_client.errors import TokenError

SERVICE_ID = "26785a09-ab16-4eb0-8407-a37497a57506"
SECRET = "3d844edf-8d35-48ac-975b-e847b4f122b0"
API_KEY = f"kent_together_test-{SERVICE_ID}-{SECRET}"
UK_MOBILE = re.compile(r"^(?:\+44|0044|0)7\d{9}$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

ERRORS = {
    400: ("ValidationError", "email_address Not a valid email address"),
    403: ("AuthError", "Invalid token: API key not found"),
    429: ("RateLimitError", "Exceeded rate limit for key type LIVE of 3000 requests per 60 seconds"),
    500: ("Exception", "Internal server error"),
}


@dataclass
class NotifyStandIn:
    notifications: list[dict] = field(default_factory=list)
    sends: int = 0
    """POSTs that reached it (taken or not)."""
    lookups: list[str] = field(default_factory=list)
    """The references asked for."""
    refused_tokens: int = 0
    failures: list[int] = field(default_factory=list)
    held: threading.Event = field(default_factory=threading.Event)
    """Set when a held send has been taken (the notification exists, no answer sent yet)."""
    release: threading.Event = field(default_factory=threading.Event)
    hold: bool = False
    url: str = ""

    def fail_next(self, *statuses: int) -> None:
        """The next sends are answered with these statuses, in order (and not taken)."""
        self.failures.extend(statuses)

    def hold_sends(self) -> None:
        """Take the next send, then keep the answer back until `release` is set."""
        self.hold = True
        self.held.clear()
        self.release.clear()

    def with_reference(self, reference: str) -> list[dict]:
        return [n for n in self.notifications if n["reference"] == reference]

    # -- the API ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, dict]:
        auth = headers.get("Authorization", "")
        if not self._token_ok(auth.removeprefix("Bearer ")):
            self.refused_tokens += 1
            return _error(403, "AuthError", "Invalid token: signature, api token not found")
        if method == "POST" and path in ("/v2/notifications/email", "/v2/notifications/sms"):
            return self._send(path.rsplit("/", 1)[1], json.loads(body or b"{}"))
        if method == "GET" and path == "/v2/notifications":
            reference = (query.get("reference") or [None])[0]
            self.lookups.append(reference)
            found = [n for n in self.notifications if reference is None or n["reference"] == reference]
            return 200, {
                "notifications": list(reversed(found)),
                "links": {"current": f"{self.url}/v2/notifications?reference={reference}"},
            }
        if method == "GET" and path.startswith("/v2/notifications/"):
            found = [n for n in self.notifications if n["id"] == path.rsplit("/", 1)[1]]
            return (200, found[0]) if found else _error(404, "NoResultFound", "No result found")
        return _error(404, "NoResultFound", "No result found")

    def _token_ok(self, token: str) -> bool:
        try:
            return get_token_issuer(token) == SERVICE_ID and decode_jwt_token(token, SECRET)
        except TokenError:
            return False

    def _send(self, kind: str, body: dict) -> tuple[int, dict]:
        self.sends += 1
        if self.failures:
            status = self.failures.pop(0)
            return _error(status, *ERRORS[status])
        to = body.get("email_address") if kind == "email" else body.get("phone_number")
        if kind == "email" and not EMAIL.match(to or ""):
            return _error(400, "ValidationError", "email_address Not a valid email address")
        if kind == "sms" and not UK_MOBILE.match(re.sub(r"[\s()-]", "", to or "")):
            return _error(400, "ValidationError", "phone_number Not a UK mobile number")
        try:
            uuid.UUID(str(body.get("template_id")))
        except ValueError:
            return _error(400, "ValidationError", "template_id is not a valid UUID")
        notification = {
            "id": str(uuid.uuid4()),
            "reference": body.get("reference"),
            "type": kind,
            "email_address" if kind == "email" else "phone_number": to,
            "template": {
                "id": body["template_id"],
                "version": 1,
                "uri": f"{self.url}/v2/template/{body['template_id']}",
            },
            "personalisation": body.get("personalisation") or {},
            "status": "created",
            "created_at": datetime.now(UTC).isoformat(),
        }
        self.notifications.append(notification)
        if self.hold:
            self.hold = False
            self.held.set()
            self.release.wait(timeout=60)
        return 201, {
            "id": notification["id"],
            "reference": notification["reference"],
            "content": {"body": "…", "subject": "…"},
            "uri": f"{self.url}/v2/notifications/{notification['id']}",
            "template": notification["template"],
        }


def _error(status: int, error: str, message: str) -> tuple[int, dict]:
    return status, {"errors": [{"error": error, "message": message}], "status_code": status}


class _Handler(BaseHTTPRequestHandler):
    stand_in: NotifyStandIn

    def _answer(self, method: str) -> None:
        url = urlparse(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, payload = self.stand_in.handle(method, url.path, parse_qs(url.query), self.headers, body)
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the caller died waiting (the test killed it)

    def do_GET(self):
        self._answer("GET")

    def do_POST(self):
        self._answer("POST")

    def log_message(self, *args):
        pass


class serving_notify:
    """`with serving_notify() as notify:` the stand-in on a free loopback port (`notify.url`)."""

    def __enter__(self) -> NotifyStandIn:
        self.stand_in = NotifyStandIn()
        handler = type("Handler", (_Handler,), {"stand_in": self.stand_in})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.stand_in.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self.stand_in

    def __exit__(self, *exc) -> None:
        self.stand_in.release.set()
        self.server.shutdown()
        self.server.server_close()
