"""Bootstrap of the web front: settings, sessions, sign-in, CSRF, the Content-Security-Policy, templates.

The web front owns no business data, only sessions: every page is a view over
the four services' public HTTP APIs (clients.py), called with a token made on
the server for the signed-in person.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from datetime import timedelta
from ipaddress import ip_network
from pathlib import Path
from typing import Literal

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PackageLoader, PrefixLoader, select_autoescape
from prometheus_client import generate_latest
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.web import sessions as session_store
from services.web.clients import ApiError, Clients, ServiceUnavailable, Tokens
from services.web.models import tables as web_tables
from shared.db import Database
from shared.logs import configure_logging
from shared.metrics import ServiceMetrics, package_version
from shared.security import FORM_BODY_TYPES, RateLimiter, install_security
from shared.settings import PORTS, ServiceSettings
from shared.spec import ServiceSpec

NAME = "web"
PORT = PORTS[NAME]
HERE = Path(__file__).parent
log = logging.getLogger(__name__)


class WebSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WEB_", extra="ignore", populate_by_name=True)

    service_name: str = NAME
    port_offset: int = Field(0, validation_alias="KT_PORT_OFFSET")
    referrals_url: str = ""
    fulfilment_url: str = ""
    actions_url: str = ""
    reporting_url: str = ""
    """The services' base URLs; default http://127.0.0.1:8001… (plus KT_PORT_OFFSET), as `make run` starts them."""
    public_url: str = ""
    """Where people reach this service (the OpenID Connect redirect is made from it); default http://127.0.0.1:8005."""

    session_idle_minutes: float = 30.0
    """A session unused this long ends: the person signs in again."""
    session_absolute_hours: float = 12.0
    """A session ends this long after it began, used or not."""
    session_sweep_seconds: float = 300.0
    """How often ended sessions (idle or past their absolute time) are deleted, presented again or not; 0: never."""
    cookie_secure: bool | None = None
    """The session cookie is sent over HTTPS only; default: in production."""

    dev_sign_in: bool | None = None
    """The development sign-in page (pick a role and a hub); default on in development, refused in production."""
    oidc_issuer: str = ""
    """The council identity provider (its /.well-known/openid-configuration is read); empty: no OpenID Connect."""
    oidc_client_id: str = ""
    oidc_client_secret: SecretStr = SecretStr("")
    oidc_scopes: str = "openid profile email offline_access"
    """What the sign-in asks for: with WEB_SERVICE_TOKENS=provider, add the services' API scope (Entra ID:
    `api://kent-together/access`), so the access token is for them; `offline_access` brings the refresh token.
    The person's role and hub are read with the services' claim mapping (KT_JWT_ROLE_CLAIM, KT_JWT_HUB_CLAIM,
    KT_JWT_ROLE_MAP)."""
    service_tokens: Literal["signed", "provider"] | None = None
    """How the pages call the services for a signed-in person: `provider`, with the person's own access token from
    the identity provider (the services verify it against KT_JWT_JWKS_URL), or `signed`, with a 5-minute token the
    web front signs with KT_JWT_SIGNING_KEY. Default: `provider` when WEB_OIDC_ISSUER and KT_JWT_JWKS_URL are set."""

    public_form_per_minute: int = 20
    """Posts per minute from one address of the resident's forms that reach the services: the postcode, sending, the
    status check (the rest of the site: rate_limit_per_minute)."""
    public_form_burst: int = 20

    @model_validator(mode="after")
    def _web_defaults(self) -> WebSettings:
        for name in ("referrals", "fulfilment", "actions", "reporting"):
            if not getattr(self, f"{name}_url"):
                setattr(self, f"{name}_url", f"http://127.0.0.1:{PORTS[name] + self.port_offset}")
        if not self.public_url:
            self.public_url = f"http://127.0.0.1:{PORT + self.port_offset}"
        production = self.environment == "production"
        if self.dev_sign_in is None:
            self.dev_sign_in = not production
        if self.dev_sign_in and production:
            raise ValueError("the development sign-in is refused in production: set WEB_OIDC_ISSUER")
        if production and not self.oidc_issuer:
            raise ValueError("production needs WEB_OIDC_ISSUER and WEB_OIDC_CLIENT_ID (OpenID Connect)")
        if self.cookie_secure is None:
            self.cookie_secure = production
        if self.service_tokens is None:
            self.service_tokens = "provider" if self.oidc_issuer and self.jwt_jwks_url else "signed"
        if self.service_tokens == "provider":
            if not self.oidc_issuer:
                raise ValueError(
                    "WEB_SERVICE_TOKENS=provider passes on the identity provider's tokens: set WEB_OIDC_ISSUER"
                )
            if self.dev_sign_in:
                raise ValueError(
                    "the development sign-in has no provider token to pass on: it needs WEB_SERVICE_TOKENS=signed"
                )
            if not self.jwt_online_form_key.get_secret_value():
                raise ValueError("WEB_SERVICE_TOKENS=provider needs KT_JWT_ONLINE_FORM_KEY for the resident's pages")
        return self

    def service_token_key(self) -> str:
        """The key the web front signs its own service tokens with: the resident's pages' alone with provider tokens."""
        if self.service_tokens == "provider":
            return self.jwt_online_form_key.get_secret_value()
        return self.signing_key()


@functools.cache
def templates() -> Environment:
    """The pages' Jinja environment: made once per process and shared by every app in it (nothing in it is an
    app's), so the GOV.UK macros and the pages are compiled once, not once per app (tests make one per test)."""
    env = Environment(
        # Ours, then the Jinja port's, which its own macros address as "govuk_frontend_jinja/components/…".
        loader=ChoiceLoader(
            [
                FileSystemLoader(HERE / "templates"),
                PrefixLoader({"govuk_frontend_jinja": PackageLoader("govuk_frontend_jinja", "templates")}),
            ]
        ),
        autoescape=select_autoescape(("html",), default_for_string=True, default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(error_list=error_list, error_for=error_for)
    # GOV.UK Frontend's components, for every template without importing each one.
    for name, folder in COMPONENTS.items():
        env.globals[name] = getattr(
            env.get_template(f"govuk_frontend_jinja/components/{folder}/macro.html").module, name
        )
    return env


COMPONENTS = {
    "govukBackLink": "back-link",
    "govukButton": "button",
    "govukCheckboxes": "checkboxes",
    "govukDateInput": "date-input",
    "govukErrorSummary": "error-summary",
    "govukFieldset": "fieldset",
    "govukFileUpload": "file-upload",
    "govukInput": "input",
    "govukNotificationBanner": "notification-banner",
    "govukPanel": "panel",
    "govukRadios": "radios",
    "govukSelect": "select",
    "govukSummaryList": "summary-list",
    "govukTag": "tag",
    "govukTextarea": "textarea",
    "govukWarningText": "warning-text",
}
"""The components the pages use, by macro name and the Jinja port's folder."""


def error_list(errors) -> list[dict]:
    """The error summary's entries, each linking to its field: errors as {field id: message} or [(id, message)]."""
    items = errors.items() if isinstance(errors, dict) else errors
    return [{"text": message, "href": f"#{field}"} for field, message in items]


def error_for(errors, field: str) -> dict | None:
    """A field's error message, as the GOV.UK macros take it."""
    message = errors.get(field) if isinstance(errors, dict) else None
    return {"text": message} if message else None


def create_app(
    settings: WebSettings | None = None, *, clock=None, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The web front; tests pass a clock (sessions' timeouts) and may pass an HTTP transport to the services."""
    from services.web import api, signin

    settings = settings or WebSettings()
    if settings.log_json:
        configure_logging(NAME, level=settings.log_level)
    db = Database(settings.database_url)
    store_options = {"clock": clock} if clock else {}
    store = session_store.SessionStore(
        db,
        settings.keyring(),
        idle=timedelta(minutes=settings.session_idle_minutes),
        absolute=timedelta(hours=settings.session_absolute_hours),
        **store_options,
    )
    tokens = Tokens(
        signing_key=settings.service_token_key(),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience.split(",")[0].strip(),
    )
    clients = Clients.build(
        urls={name: getattr(settings, f"{name}_url") for name in ("referrals", "fulfilment", "actions", "reporting")},
        tokens=tokens,
        transport=transport,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await store.forget_expired()  # the sessions table is migrated by `kent-together migrate`, as every service's
        sweeping = (
            asyncio.create_task(_sweep(store, settings.session_sweep_seconds), name="web-sessions-sweep")
            if settings.session_sweep_seconds > 0
            else None
        )
        try:
            yield
        finally:
            if sweeping is not None:
                sweeping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeping
            await clients.close()
            if app.state.oidc is not None:
                await app.state.oidc.close()
            await db.dispose()

    app = FastAPI(title="Kent Together", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.sessions = store
    app.state.clients = clients
    app.state.templates = templates()
    app.state.oidc = signin.OpenIdClient(settings) if settings.oidc_issuer else None
    app.state.trusted_proxies = [ip_network(p, strict=False) for p in settings.trusted_proxies]
    app.state.public_rate = RateLimiter(per_minute=settings.public_form_per_minute, burst=settings.public_form_burst)

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for router in api.routers():
        app.include_router(router)

    @app.get("/health", include_in_schema=False)
    async def health():
        return {"status": "ok", "service": NAME, "version": package_version()}

    @app.get("/ready", include_in_schema=False)
    async def ready():
        """Readiness: the sessions database answers (every page needs it)."""
        try:
            await db.ping()
        except Exception as error:
            log.warning("not ready: %s", error)
            return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
        return {"status": "ok", "database": "ok"}

    metrics = ServiceMetrics(NAME, revision=settings.build_revision)

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint():
        """The process's and build's metrics (the pages' traffic is the services' own metrics' to count)."""
        return Response(generate_latest(metrics.registry), media_type="text/plain; version=0.0.4")

    _install_errors(app)
    api.install_page_errors(app)
    app.middleware("http")(_with_session)
    # Headers every service sends, the general rate limit and body limits; this page's own policy wins.
    install_security(app, settings, body_types=FORM_BODY_TYPES)  # HTML forms, not JSON
    return app


async def _sweep(store: session_store.SessionStore, every_seconds: float) -> None:
    """Delete ended sessions (a resident's sealed answers among them) without waiting for their cookie to come back.

    Every replica sweeps; a delete of rows already gone is nothing. A failed round is logged and tried again."""
    while True:
        await asyncio.sleep(every_seconds)
        try:
            removed = await store.forget_expired()
        except Exception as error:
            log.warning("sessions sweep failed: %s", error)
            continue
        if removed:
            log.info("sessions sweep: %s ended sessions deleted", removed)


async def _with_session(request: Request, call_next) -> Response:
    """The session around every page: loaded from the cookie, saved after, a fresh nonce for the page's script."""
    if request.url.path.startswith("/static/") or request.url.path in ("/health", "/ready", "/metrics"):
        return await call_next(request)
    store: session_store.SessionStore = request.app.state.sessions
    session, ended = await store.load(request.cookies.get(session_store.COOKIE))
    request.state.session = session or store.new()
    request.state.session_ended = ended and request.state.session.user is None
    request.state.nonce = secrets.token_urlsafe(16)
    response = await call_next(request)
    retired = getattr(request.state, "retired_session", None)
    if retired is not None and retired.stored:
        await store.save(retired)  # ended at sign-in: its row goes
    session = request.state.session
    settings: WebSettings = request.app.state.settings
    if session.ended:
        if session.stored:
            await store.save(session)
        response.delete_cookie(session_store.COOKIE, path="/")
    elif session.changed or session.stored:
        await store.save(session)
        if request.cookies.get(session_store.COOKIE) != session.cookie:
            response.set_cookie(
                session_store.COOKIE,
                session.cookie,
                httponly=True,
                secure=settings.cookie_secure,
                samesite="lax",
                path="/",
                max_age=int(settings.session_absolute_hours * 3600),
            )
    if "content-security-policy" not in response.headers:
        # Sign-out posts, then goes on to the identity provider: a redirect the form-action must allow.
        provider = httpx.URL(settings.oidc_issuer) if settings.oidc_issuer else None
        form_action = "'self'" + (f" {provider.scheme}://{provider.netloc.decode()}" if provider else "")
        response.headers["Content-Security-Policy"] = (
            f"default-src 'none'; script-src 'self' 'nonce-{request.state.nonce}'; style-src 'self'; "
            f"img-src 'self' data:; font-src 'self'; connect-src 'self'; form-action {form_action}; "
            "frame-ancestors 'none'; base-uri 'none'"
        )
    return response


def render(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    """A page: the template with the session's user, CSRF token and nonce."""
    session = request.state.session
    env: Environment = request.app.state.templates
    html = env.get_template(template).render(
        request=request,
        user=session.user,
        csrf_token=session.csrf_token(),
        cspNonce=request.state.nonce,
        settings=request.app.state.settings,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


class SignInNeeded(Exception):
    """The page needs someone signed in; `notice` says on the sign-in page why a session ended ("idle", "provider")."""

    def __init__(self, notice: str | None = None):
        super().__init__(notice)
        self.notice = notice


def fresh_session(request: Request, data: dict | None = None) -> None:
    """End the request's session (its row goes, its cookie is replaced) and carry on with a new one holding `data`."""
    old = request.state.session
    old.ended = True
    request.state.retired_session = old
    request.state.session = request.app.state.sessions.new(data)


class CsrfRefused(Exception):
    pass


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(SignInNeeded)
    async def _sign_in(request: Request, error: SignInNeeded):
        next_page = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        request.state.session.set("next", next_page if request.method == "GET" else request.url.path)
        notice = error.notice or ("idle" if request.state.session_ended else None)
        if notice:
            request.state.session.set("ended_notice", notice)
        return RedirectResponse("/sign-in", status_code=303)

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, error: CsrfRefused):
        return render(request, "errors/form-expired.html", status_code=400, title="This form has expired")

    @app.exception_handler(ApiError)
    async def _api(request: Request, error: ApiError):
        user = request.state.session.user
        if (
            error.status == 401
            and user is not None
            and user.get("via") == "oidc"
            and request.app.state.settings.service_tokens == "provider"
        ):
            # The services refused the person's own token (revoked, or expired early): their sign-in is over.
            fresh_session(request)
            return await _sign_in(request, SignInNeeded("provider"))
        if error.status == 404:
            return render(request, "errors/not-found.html", status_code=404, title="Page not found")
        if error.status in (401, 403):
            return render(request, "errors/forbidden.html", status_code=403, title="You cannot see this page")
        log.warning("an API answered %s on %s: %s", error.status, request.url.path, error)
        return render(request, "errors/problem.html", status_code=502, title="Sorry, there is a problem")

    @app.exception_handler(ServiceUnavailable)
    async def _down(request: Request, error: ServiceUnavailable):
        log.warning("%s", error)
        return render(request, "errors/problem.html", status_code=503, title="Sorry, the service is unavailable")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException):
        if error.status_code == 404:
            return render(request, "errors/not-found.html", status_code=404, title="Page not found")
        return render(request, "errors/problem.html", status_code=error.status_code, title="Sorry, there is a problem")

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render(request, "errors/problem.html", status_code=500, title="Sorry, there is a problem")


SPEC = ServiceSpec(
    name=NAME,
    port=PORT,
    settings_class=WebSettings,
    create_app=create_app,
    tables=web_tables,
    migrations=HERE / "migrations",
)
