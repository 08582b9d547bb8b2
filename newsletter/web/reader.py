"""The reader's door: one-click unsubscribe, double opt-in signup, SendGrid's event webhook.

`newsletter serve` runs this Starlette app under uvicorn, behind a reverse proxy. It reaches
the store, tokens and addresses only: premailer is never imported, and sendgrid only when a
webhook batch arrives or a SendGrid workspace mails a confirmation.

    GET  /unsubscribe?token=T   a page with a button; GET never unsubscribes (link scanners)
    POST /unsubscribe?token=T   RFC 8058 one-click (List-Unsubscribe=One-Click), or the button
    POST /resubscribe?token=T   undo, from the page shown after unsubscribing
    GET  /subscribe             the signup form (the archive's form lands here, prefilled)
    POST /subscribe             sends the confirmation mail; the same answer for any address
    GET  /confirm?token=T       a button; POST /confirm?token=T subscribes and records consent
    POST /webhooks/sendgrid     signed event batches: bounces and complaints are suppressed

Over 400 lines: one short handler per route above, sharing the token checks, the form's
CSRF binding and the page rendering; the webhook's parsing and verification live in
`web/webhook.py`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter.config import Config
from newsletter.errors import ConfigError, NewsletterError, RequestRefused, TokenError
from newsletter.lists.addresses import address_key, validate_address
from newsletter.lists.tokens import SECRET_ENV, PurposeSigner, signer_from_env
from newsletter.storage.store import Signup, Store, Suppression, open_store
from newsletter.web import webhook
from newsletter.web.favicon import CONTENT_TYPE as ICO_TYPE
from newsletter.web.favicon import favicon_ico
from newsletter.web.guards import (
    JSON,
    RateLimit,
    client_ip,
    media_type,
    new_csrf_cookie,
    read_body,
    read_form,
)

T = TypeVar("T")
log = logging.getLogger("newsletter.serve")

CONFIRM_DAYS = 7
CSRF_COOKIE = "newsletter_csrf"
CSRF_HOURS = 12
FORM_LIMIT = 8 * 1024  # a form with an address and a name is a few hundred bytes
WEBHOOK_LIMIT = 4 * 1024 * 1024  # SendGrid posts batches of up to about 1000 events
ONE_CLICK = "One-Click"
_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # tokens are in the URL: never pass them on
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}


class ReaderService:
    """The app's state: the store (one connection, one writer at a time), signers, limits."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # The service signs and checks real links: it needs the real secret, always.
        self.unsubscribe = signer_from_env(config.env, config.list_id, allow_local=False)
        secret = config.env[SECRET_ENV]
        self.confirm = PurposeSigner(secret, config.list_id, "confirm")
        self.csrf = PurposeSigner(secret, config.list_id, "csrf")
        self.store: Store = open_store(config)
        self._lock = threading.Lock()
        self.per_ip = RateLimit(limit=10, window=600.0)  # signups from one address per 10 min
        self.per_address = RateLimit(limit=3, window=3600.0)  # mails to one inbox per hour
        self.posts_per_ip = RateLimit(limit=60, window=60.0)  # any form, per minute
        self.secure = (config.settings.service.url or "").startswith("https://")
        self.pages = jinja2.Environment(
            loader=jinja2.PackageLoader("newsletter", "templates"),
            undefined=jinja2.StrictUndefined,
            autoescape=True,
        )

    async def db(self, work: Callable[[Store], T]) -> T:
        """Run store work in a thread, one at a time: the connection is not shared."""

        def locked() -> T:
            with self._lock:
                return work(self.store)

        return await run_in_threadpool(locked)

    def close(self) -> None:
        self.store.close()

    # --- pages ---

    def page(
        self,
        template: str,
        status: int = 200,
        *,
        csrf_cookie: str | None = None,
        **context: Any,
    ) -> HTMLResponse:
        s = self.config.settings
        html = self.pages.get_template(f"reader/{template}").render(
            newsletter=s.name, postal_address=s.postal_address, **context
        )
        response = HTMLResponse(html, status_code=status, headers=_HEADERS)
        if csrf_cookie is not None:
            response.set_cookie(
                CSRF_COOKIE,
                csrf_cookie,
                max_age=CSRF_HOURS * 3600,
                httponly=True,
                secure=self.secure,
                samesite="strict",
            )
        return response

    def message(self, title: str, text: str, status: int = 200) -> HTMLResponse:
        return self.page("message.html", status, title=title, text=text, form=None, csrf="")

    def with_form(
        self, request: Request, title: str, text: str, action: str, button: str
    ) -> HTMLResponse:
        cookie = request.cookies.get(CSRF_COOKIE) or new_csrf_cookie()
        return self.page(
            "message.html",
            title=title,
            text=text,
            form={"action": action, "button": button},
            csrf=self.csrf_token(cookie),
            csrf_cookie=cookie,
        )

    # --- CSRF: a signed double-submit token, bound to a random cookie ---

    def csrf_token(self, cookie: str) -> str:
        return self.csrf.token(cookie, expires=int(time.time()) + CSRF_HOURS * 3600)

    def check_csrf(self, request: Request, form: dict[str, str]) -> None:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        try:
            bound = self.csrf.verify(form.get("csrf", ""), now=time.time())
        except TokenError:
            bound = ""
        if not cookie or not secrets.compare_digest(bound.encode(), cookie.encode()):
            raise RequestRefused(
                403, "This form has expired or came from elsewhere. Reload the page and try again."
            )

    def base_url(self, request: Request) -> str:
        return self.config.settings.service.url or str(request.base_url).rstrip("/")

    def address_of(self, request: Request) -> str:
        token = request.query_params.get("token", "")
        try:
            return self.unsubscribe.verify(token)
        except TokenError:
            raise RequestRefused(
                400, "This unsubscribe link is not valid. Use the link from your latest email."
            ) from None

    # --- unsubscribe ---

    async def unsubscribe_page(self, request: Request) -> Response:
        address = self.address_of(request)
        action = f"/unsubscribe?token={request.query_params['token']}"
        return self.with_form(
            request,
            "Unsubscribe",
            f"Stop sending {self.config.settings.name} to {address}?",
            action,
            "Unsubscribe",
        )

    async def unsubscribe_post(self, request: Request) -> Response:
        address = self.address_of(request)
        form = await read_form(request, FORM_LIMIT)
        one_click = form.get("List-Unsubscribe") == ONE_CLICK
        if not one_click:
            self.check_csrf(request, form)
        how = "one-click" if one_click else "unsubscribe page"
        entry = Suppression(address, f"unsubscribe request ({how})", "unsubscribe", "service")
        await self.db(lambda store: store.suppress([entry]))
        if one_click:  # a mailbox provider, not a person: a plain 200, nothing to follow
            return PlainTextResponse("unsubscribed\n", headers=_HEADERS)
        return self.with_form(
            request,
            "You are unsubscribed",
            f"{address} will get no more mail from {self.config.settings.name}. "
            "Unsubscribed by mistake?",
            f"/resubscribe?token={request.query_params['token']}",
            "Subscribe me again",
        )

    async def resubscribe_post(self, request: Request) -> Response:
        address = self.address_of(request)
        form = await read_form(request, FORM_LIMIT)
        self.check_csrf(request, form)

        def undo(store: Store) -> bool:
            current = store.suppression(address)
            # Only the reader's own unsubscribe is theirs to undo; a bounce or a complaint
            # is lifted by the editor.
            if current is not None and current.kind != "unsubscribe":
                return False
            store.resubscribe(address)
            return True

        if not await self.db(undo):
            return self.message(
                "Not changed",
                "This address cannot be subscribed again from here; write to the editor.",
                409,
            )
        return self.message(
            "Welcome back", f"{address} is subscribed to {self.config.settings.name} again."
        )

    # --- subscribe, with double opt-in ---

    async def subscribe_page(self, request: Request) -> Response:
        cookie = request.cookies.get(CSRF_COOKIE) or new_csrf_cookie()
        given = request.query_params.get("email", "")[:254]
        return self.page(
            "subscribe.html",
            title="Subscribe",
            action="/subscribe",
            email=given,
            csrf=self.csrf_token(cookie),
            csrf_cookie=cookie,
        )

    async def subscribe_post(self, request: Request) -> Response:
        form = await read_form(request, FORM_LIMIT)
        self.check_csrf(request, form)
        ip = client_ip(request)
        if not self.per_ip.hit(ip):
            raise RequestRefused(429, "Too many signups from your network. Try again in a while.")
        sent = self.message(
            "Check your inbox",
            "If the address can get mail, a message with a confirmation link is on its way. "
            f"Open it within {CONFIRM_DAYS} days to start getting "
            f"{self.config.settings.name}.",
        )
        if form.get("website"):  # the honeypot: people never see it, bots fill it
            return sent
        try:
            address = validate_address(form.get("email", "")[:254])
        except ValueError:
            raise RequestRefused(
                400, "That is not an email address. Go back and check it."
            ) from None
        if not self.per_address.hit(address_key(address)):
            raise RequestRefused(
                429, "We just sent a confirmation to that address. Check your inbox."
            )
        name = " ".join(form.get("name", "").split())[:100]
        signup = Signup(
            nonce=secrets.token_urlsafe(18),
            email=address,
            name=name,
            asked_at=datetime.now(UTC).isoformat(timespec="seconds"),
            source=f"signup form ({request.headers.get('referer', '/subscribe')[:200]})",
            ip=ip,
        )
        await self.db(lambda store: store.begin_signup(signup))
        expires = int(time.time()) + CONFIRM_DAYS * 86400
        link = f"{self.base_url(request)}/confirm?token=" + self.confirm.token(
            signup.nonce, expires=expires
        )
        await run_in_threadpool(self._mail_confirmation, address, name, link)
        return sent

    def _mail_confirmation(self, address: str, name: str, link: str) -> None:
        from newsletter.delivery.confirmation import confirmation_message, send_confirmation

        message = confirmation_message(self.config, address, name, link, days=CONFIRM_DAYS)
        try:
            send_confirmation(self.config, message)
        except NewsletterError as exc:
            log.error("%s", exc)
            raise RequestRefused(
                503, "We could not send the confirmation mail. Try again later."
            ) from None

    def nonce_of(self, request: Request) -> str:
        try:
            return self.confirm.verify(request.query_params.get("token", ""), now=time.time())
        except TokenError as exc:
            expired = "expired" in str(exc)
            raise RequestRefused(
                400,
                "This confirmation link has expired. Sign up again to get a new one."
                if expired
                else "This confirmation link is not valid.",
            ) from None

    async def confirm_page(self, request: Request) -> Response:
        self.nonce_of(request)
        return self.with_form(
            request,
            "Confirm your subscription",
            f"Press the button to start getting {self.config.settings.name}.",
            f"/confirm?token={request.query_params['token']}",
            "Yes, subscribe me",
        )

    async def confirm_post(self, request: Request) -> Response:
        nonce = self.nonce_of(request)
        form = await read_form(request, FORM_LIMIT)
        self.check_csrf(request, form)
        now = datetime.now(UTC).isoformat(timespec="seconds")
        member = await self.db(lambda store: store.confirm_signup(nonce, now))
        if member is None:
            raise RequestRefused(409, "This link was already used. You are subscribed.")
        return self.message(
            "You are subscribed",
            f"{member.email} will get {self.config.settings.name} from the next issue on.",
        )

    # --- SendGrid's event webhook ---

    async def sendgrid_events(self, request: Request) -> Response:
        if media_type(request) != JSON:
            raise RequestRefused(415, "expected application/json")
        body = await read_body(request, WEBHOOK_LIMIT)
        try:
            await run_in_threadpool(
                webhook.verify,
                self.config.env,
                body,
                request.headers.get(webhook.SIGNATURE_HEADER, ""),
                request.headers.get(webhook.TIMESTAMP_HEADER, ""),
            )
            found = webhook.suppressions(body, self.config.list_id)
        except RequestRefused as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=_HEADERS)
        except ConfigError as exc:
            log.error("%s", exc)
            return JSONResponse({"error": "not configured"}, status_code=503, headers=_HEADERS)
        added = await self.db(lambda store: store.suppress(found))
        return JSONResponse({"suppressed": added, "seen": len(found)}, headers=_HEADERS)


Handler = Callable[[Request], Awaitable[Response]]


def create_app(config: Config) -> Starlette:
    """The ASGI app for one workspace; ConfigError (before any socket) if it cannot run."""
    service = ReaderService(config)

    def guarded(handler: Handler, posts: bool = False) -> Handler:
        async def run(request: Request) -> Response:
            try:
                if posts and not service.posts_per_ip.hit(client_ip(request)):
                    raise RequestRefused(
                        429, "Too many requests from your network. Try again soon."
                    )
                return await handler(request)
            except RequestRefused as refused:
                title = "Too many requests" if refused.status == 429 else "That did not work"
                return service.message(title, refused.message, refused.status)

        return run

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok\n", headers=_HEADERS)

    icon = favicon_ico()

    async def favicon(request: Request) -> Response:
        # browsers ask for it on every page the service shows; a 404 would fill the log
        return Response(icon, media_type=ICO_TYPE, headers={"Cache-Control": "max-age=86400"})

    routes = [
        Route("/healthz", health),
        Route("/favicon.ico", favicon),
        Route("/unsubscribe", guarded(service.unsubscribe_page), methods=["GET"]),
        # No per-IP limit: mailbox providers send every reader's one-click POST from a few
        # addresses, and each request needs a valid signed token anyway.
        Route("/unsubscribe", guarded(service.unsubscribe_post), methods=["POST"]),
        Route("/resubscribe", guarded(service.resubscribe_post, True), methods=["POST"]),
        Route("/subscribe", guarded(service.subscribe_page), methods=["GET"]),
        Route("/subscribe", guarded(service.subscribe_post, True), methods=["POST"]),
        Route("/confirm", guarded(service.confirm_page), methods=["GET"]),
        Route("/confirm", guarded(service.confirm_post, True), methods=["POST"]),
        Route("/webhooks/sendgrid", guarded(service.sendgrid_events), methods=["POST"]),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        service.close()

    return Starlette(routes=routes, lifespan=lifespan)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the server starts so `--port 0` can be printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock


def run(app: Starlette, sock: socket.socket) -> None:
    """Serve `app` on `sock` until Ctrl-C or SIGTERM (systemd's stop)."""
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            proxy_headers=True,  # the reader's address from the proxy's X-Forwarded-For
            access_log=False,  # the URLs carry readers' tokens: they stay out of logs
            log_level="warning",
        )
    )
    server.run(sockets=[sock])


def bound_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"
