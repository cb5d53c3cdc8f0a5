"""HTTP hardening every service shares: security headers, CORS, rate limits, body-size limits.

One pure ASGI middleware (plus Starlette's CORS middleware when origins are
configured), installed by `create_service_app` through `install_security`.
Settings (see `ServiceSettings`) make each part configurable per service: the
reporting dashboard, say, needs a Content-Security-Policy that lets its own
same-origin scripts run, where an API needs none at all.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network
from typing import TYPE_CHECKING, cast

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http_errors import send_problem

if TYPE_CHECKING:
    from fastapi import FastAPI

    from shared.auth import TokenVerifier
    from shared.settings import ServiceSettings

# The paths of FastAPI's interactive documentation: its page loads Swagger UI or ReDoc from a CDN.
DOCS_PATHS = ("/docs", "/docs/oauth2-redirect", "/redoc")
# Probes and the scraper are never throttled: a busy service must still say it is alive.
UNLIMITED_PATHS = ("/health", "/ready", "/metrics")


def install_security(app: FastAPI, settings: ServiceSettings, *, body_types: tuple[bytes, ...] | None = None) -> None:
    """Add the middleware; call before the request-context middleware, so it runs inside it (request ids).

    `body_types`: the media types a body may have (default the APIs': JSON, or a file
    upload); anything else is a 415. The web front takes HTML forms instead.
    """
    if settings.cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_allow_origins),
            allow_methods=["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "X-Request-Id", "Accept"],
            expose_headers=[
                "Location",
                "X-Request-Id",
                "Retry-After",
                "Idempotent-Replayed",
                "ETag",
                "Last-Modified",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
                "RateLimit-Policy",
            ],
            max_age=600,
        )
    app.add_middleware(
        SecurityMiddleware,
        content_security_policy=settings.content_security_policy,
        docs_content_security_policy=settings.docs_content_security_policy,
        strict_transport=settings.environment == "production",
        rate=RateLimiter(per_minute=settings.rate_limit_per_minute, burst=settings.rate_limit_burst)
        if settings.rate_limit_per_minute > 0
        else None,
        max_body_bytes=settings.max_body_bytes,
        max_upload_bytes=settings.max_upload_bytes,
        trusted_proxies=[ip_network(p, strict=False) for p in settings.trusted_proxies],
        body_types=body_types or API_BODY_TYPES,
    )


BODY_METHODS = ("POST", "PUT", "PATCH")


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length", b"")
    return (length.isdigit() and int(length) > 0) or b"transfer-encoding" in headers


API_BODY_TYPES = (b"application/json", b"+json", b"multipart/form-data")
"""JSON (`application/json`, `…+json`) or a file upload."""
FORM_BODY_TYPES = (b"application/x-www-form-urlencoded", b"multipart/form-data")
"""What an HTML form sends (the web front)."""


def _accepted_body_type(headers: dict[bytes, bytes], types: tuple[bytes, ...]) -> bool:
    """The body's declared media type is one of `types` (`+json`: any JSON suffix); never guessed from the bytes."""
    media = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    return any(media == t or (t.startswith(b"+") and media.endswith(t)) for t in types)


class RateLimiter:
    """A token bucket per client: `burst` at once, refilled at `per_minute`. Per process (see docs/security.md).

    The table of clients is bounded by `max_clients`: when full, the client seen
    longest ago goes (a flood of new keys pushes out only the quietest, and never
    resets everyone's budget). A client forgotten with a full bucket loses nothing.
    """

    def __init__(
        self, *, per_minute: int, burst: int, clock: Callable[[], float] = time.monotonic, max_clients: int = 100_000
    ):
        self.rate = per_minute / 60.0
        self.burst = max(1, burst)
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, client: str) -> Allowance:
        """Whether the request may go ahead, and what is left: `wait` is 0, or the seconds until it may."""
        now = self.clock()
        tokens, then = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) >= self.max_clients:
            self._buckets.popitem(last=False)  # the least recently seen
        self._buckets[client] = (tokens, now)
        return Allowance(
            wait=wait,
            remaining=int(tokens),
            reset=math.ceil((self.burst - tokens) / self.rate),
            limit=self.burst,
            window=math.ceil(self.burst / self.rate),
        )

    def __len__(self) -> int:
        return len(self._buckets)


@dataclass(frozen=True, slots=True)
class Allowance:
    wait: float
    remaining: int
    reset: int
    """Seconds until the client's whole burst is back."""
    limit: int
    window: int

    def headers(self) -> list[tuple[bytes, bytes]]:
        """`RateLimit-*` (draft-ietf-httpapi-ratelimit-headers): a client can pace itself before it is refused."""
        return [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset).encode()),
            (b"ratelimit-policy", f"{self.limit};w={self.window}".encode()),
        ]


def client_address(
    scope: Scope, headers: dict[bytes, bytes], trusted_proxies: Sequence[IPv4Network | IPv6Network]
) -> str:
    """The caller's address: the socket's peer, or, when that is a trusted proxy, the address it says it served.

    `X-Forwarded-For` is read right to left, skipping trusted proxies, so a client
    cannot choose its own address by sending the header itself.
    """
    peer: str = (scope.get("client") or ("unknown", 0))[0]
    if not trusted_proxies or not _trusted(peer, trusted_proxies):
        return peer
    forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
    for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
        if not _trusted(hop, trusted_proxies):
            return hop
    return peer


def _trusted(address: str, networks: Iterable[IPv4Network | IPv6Network]) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


class SecurityMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        content_security_policy: str,
        docs_content_security_policy: str,
        strict_transport: bool,
        rate: RateLimiter | None,
        max_body_bytes: int,
        max_upload_bytes: int,
        trusted_proxies: Sequence[IPv4Network | IPv6Network] = (),
        body_types: tuple[bytes, ...] = API_BODY_TYPES,
    ) -> None:
        self.app = app
        self.body_types = body_types
        self.rate = rate
        self.trusted_proxies = list(trusted_proxies)
        self.max_body_bytes = max_body_bytes
        self.max_upload_bytes = max_upload_bytes
        common = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
            (b"x-frame-options", b"DENY"),
            (b"cross-origin-opener-policy", b"same-origin"),
        ]
        if strict_transport:
            common.append((b"strict-transport-security", b"max-age=31536000; includeSubDomains"))
        self.headers = common + [(b"content-security-policy", content_security_policy.encode())]
        self.docs_headers = common + [(b"content-security-policy", docs_content_security_policy.encode())]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        extra = self.docs_headers if scope["path"] in DOCS_PATHS else self.headers

        allowance: Allowance | None = None

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [(name, value) for name, value in extra if name not in present]
                if allowance is not None:
                    headers += allowance.headers()
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))  # residents' data stays out of caches
                message["headers"] = headers
            await send(message)

        headers: dict[bytes, bytes] = dict(scope["headers"])
        if self.rate is not None and scope["path"] not in UNLIMITED_PATHS:
            allowance = self.rate.take(self._client(scope, headers))
            if allowance.wait > 0:
                seconds = max(1, math.ceil(allowance.wait))
                return await self._problem(
                    scope,
                    send_with_headers,
                    429,
                    "too-many-requests",
                    "Too many requests",
                    f"slow down: try again in {seconds} s",
                    [(b"retry-after", str(seconds).encode())],
                )

        if scope["method"] in BODY_METHODS and _has_body(headers) and not _accepted_body_type(headers, self.body_types):
            detail = (
                "send the body as JSON with Content-Type: application/json (a file upload as multipart/form-data)"
                if self.body_types == API_BODY_TYPES
                else "send the form as " + " or ".join(t.decode() for t in self.body_types)
            )
            accepted = b", ".join(t for t in self.body_types if not t.startswith(b"+"))
            return await self._problem(
                scope,
                send_with_headers,
                415,
                "unsupported-media-type",
                "Unsupported media type",
                detail,
                [(b"accept-post", accepted)],
            )

        limit = (
            self.max_upload_bytes
            if headers.get(b"content-type", b"").startswith(b"multipart/")
            else self.max_body_bytes
        )
        declared = headers.get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await self._problem(
                scope,
                send_with_headers,
                413,
                "payload-too-large",
                "Request body too large",
                f"the body is over {limit} bytes",
            )

        # No (or a false) Content-Length: count what arrives, and stop reading past the limit.
        received, too_large, answered = 0, False, False

        async def counted_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal answered
            if too_large:
                if not answered:
                    answered = True
                    await self._problem(
                        scope,
                        send_with_headers,
                        413,
                        "payload-too-large",
                        "Request body too large",
                        f"the body is over {limit} bytes",
                    )
                return  # the app's own answer to a body cut short is dropped
            await send_with_headers(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
            # A route reading the body itself met the cut (ClientDisconnect): the answer is still 413.
        if too_large and not answered:
            await self._problem(
                scope,
                send_with_headers,
                413,
                "payload-too-large",
                "Request body too large",
                f"the body is over {limit} bytes",
            )

    def _client(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        """Who to count against: the verified token's subject, else the caller's address."""
        scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and token:
            try:
                return "sub:" + cast("TokenVerifier", scope["app"].state.verifier).verify(token).subject
            except Exception:
                pass  # an invalid token is counted by address, and answered 401 further in
        return f"ip:{client_address(scope, headers, self.trusted_proxies)}"

    @staticmethod
    async def _problem(
        scope: Scope,
        send: Send,
        status: int,
        slug: str,
        title: str,
        detail: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        await send_problem(scope, send, status=status, slug=slug, title=title, detail=detail, headers=headers)
