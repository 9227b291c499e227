"""Web console login: password (scrypt) and optional TOTP, database sessions, CSRF, roles, audit.

Routes (``docs/web.md``)::

    GET  /login     the login form (sets a short-lived login cookie for the form's CSRF check)
    POST /login     username + password, then a TOTP code when the user has enrolled one
    POST /logout    ends the session (needs the session's CSRF token)
    GET  /agent     the agent's landing page (any logged-in user)

and ``guard(resource, role)`` puts any other resource behind a session (the dashboard, ``/api/live``).

A session is a random 256-bit id in the ``cc_session`` cookie (``HttpOnly; SameSite=Strict; Path=/``, plus
``Secure`` on TLS or with ``[server] secure_cookies``); the database keeps its SHA-256 (``store/sessions.py``),
so sessions survive a restart and can be revoked. Login always mints a new id (no fixation). Unsafe methods
on a session need the synchronizer token, an HMAC of the session id (form field ``csrf_token`` or header
``X-CSRF-Token``), and an ``Origin`` (or ``Referer``) of the site itself. Bearer tokens (``Authorization``)
are not ambient credentials, so requests carrying one need no CSRF token.

Login failures are throttled per user name and per client address (lockout with doubling back-off); an unknown
user gets the same answer, after the same scrypt work, as a wrong password. Successes, failures, TOTP failures
and logouts are written to ``audit_log``.

Other parts use ``WebAuth.authenticate(request, role)`` (the REST API) and ``WebAuth.session_user(id)`` with
``session_cookie(header)`` and ``WebAuth.allowed_origin(origin)`` (the agent WebSocket's handshake).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, urlsplit

import pyotp
from jinja2 import Environment
from twisted.internet.defer import CancelledError as DeferredCancelled
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web import pages
from twisted.web.error import UnsupportedMethod
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from contactcentre.config import AuthConfig, ServerConfig
from contactcentre.edge.limits import address_key
from contactcentre.edge.web.sockets import LiveSockets
from contactcentre.store.privacy import audit_event as _audit
from contactcentre.store.schema import ROLES
from contactcentre.store.sessions import create_session, find_session, purge_sessions, revoke_session, touch_session
from contactcentre.store.users import (
    Credentials,
    User,
    check_password,
    credentials,
    hash_password,
    use_totp_step,
    user_for_token,
)

if TYPE_CHECKING:
    from contactcentre.server.centre import Centre
    from contactcentre.store.db import Connection

log = logging.getLogger(__name__)

SESSION_COOKIE = b"cc_session"
LOGIN_COOKIE = b"cc_login"  # the login form's double-submit CSRF value, before there is a session
CSRF_FIELD = b"csrf_token"
CSRF_HEADER = b"x-csrf-token"
SAFE_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
HOME = {"agent": "/agent", "supervisor": "/", "admin": "/"}
TOTP_STEP_MS = 30_000
TOTP_PENDING_MS = 5 * 60_000  # between a right password and its TOTP code
TOTP_ATTEMPTS = 5  # wrong codes per password step before starting again
MAX_FORM_BYTES = 16 * 1024
MAX_PENDING = 10_000
ISSUER = "contactcentre"

# Pages that post forms must not use ``no-referrer``: with it the browser sends ``Origin: null`` on a form
# post, which the origin check refuses. ``same-origin`` keeps the referrer off every other site.
_PAGE_CSP = (
    b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)


class AuthError(Exception):
    """Not allowed: ``status`` 401 (who are you?), 403 (not you, not from there, no CSRF token) or 429."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[bytes, bytes] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


# ----------------------------------------------------------------------------------------------- throttle


@dataclass
class _Strikes:
    failures: int = 0
    lockouts: int = 0
    locked_until_ms: int = 0
    last_ms: int = 0


class Throttle:
    """Failed attempts per key (a user name, an address): ``max_failures`` in a row lock the key for
    ``lockout_ms``, doubled for each further lockout up to ``max_lockout_ms``. A key left alone for
    ``forget_ms`` starts afresh. Memory is bounded: beyond ``max_keys`` the oldest unlocked keys go."""

    def __init__(
        self,
        max_failures: int,
        lockout_ms: int,
        max_lockout_ms: int,
        *,
        forget_ms: int | None = None,
        max_keys: int = 100_000,
    ) -> None:
        self.max_failures = max_failures
        self.lockout_ms = lockout_ms
        self.max_lockout_ms = max_lockout_ms
        self.forget_ms = forget_ms if forget_ms is not None else max(15 * 60_000, 2 * max_lockout_ms)
        self.max_keys = max_keys
        self._keys: dict[str, _Strikes] = {}

    def retry_after_ms(self, key: str, now_ms: int) -> int:
        """0 when ``key`` may try now, else how long it must wait."""
        s = self._keys.get(key)
        return max(0, s.locked_until_ms - now_ms) if s is not None else 0

    def strike(self, key: str, now_ms: int) -> None:
        s = self._keys.pop(key, None)
        if s is None or now_ms - s.last_ms > self.forget_ms:
            s = _Strikes()
        s.failures += 1
        s.last_ms = now_ms
        if s.failures >= self.max_failures:
            s.lockouts += 1
            s.failures = 0
            s.locked_until_ms = now_ms + min(self.lockout_ms * 2 ** (s.lockouts - 1), self.max_lockout_ms)
        self._keys[key] = s  # most recent last, so eviction takes the stalest
        while len(self._keys) > self.max_keys:
            oldest = next(iter(self._keys))
            if self._keys[oldest].locked_until_ms > now_ms:
                break  # everyone kept is locked: better too much memory than unlocking an attacker
            del self._keys[oldest]

    def forgive(self, key: str) -> None:
        """Take back one strike: an attempt struck before its check that turned out right. Only failures may
        lock a key, so a lockout that this strike completed is lifted, one strike short of it again."""
        s = self._keys.get(key)
        if s is None:
            return
        if s.failures > 0:
            s.failures -= 1
        elif s.lockouts > 0:
            # Struck while the key was open (a locked key is refused before striking), so this strike was the
            # one that locked it, or one of the strikes that did: undo that lockout.
            s.lockouts -= 1
            s.locked_until_ms = 0
            s.failures = self.max_failures - 1

    def clear(self, key: str) -> None:
        self._keys.pop(key, None)


# -------------------------------------------------------------------------------------------- helpers


def csrf_token(session_id: str) -> str:
    """The session's synchronizer token: derived, so nothing more is stored, and useless without the id."""
    return hmac.new(session_id.encode(), b"contactcentre csrf", hashlib.sha256).hexdigest()


def session_cookie(cookie_header: str | bytes | None) -> str | None:
    """The session id in a ``Cookie`` header (for the WebSocket handshake), or None."""
    return _cookie(cookie_header, SESSION_COOKIE.decode())


def _cookie(cookie_header: str | bytes | None, name: str) -> str | None:
    if not cookie_header:
        return None
    if isinstance(cookie_header, bytes):
        cookie_header = cookie_header.decode("latin-1")
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None and morsel.value else None


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL, lower-cased; None if it has none."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}".lower()


def safe_next(target: str | None) -> str | None:
    """A local path to go to after login (``/agent?x=1``), or None: never another site (``//evil``)."""
    if not target or len(target) > 512 or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    if any(ord(c) < 0x21 for c in target):
        return None
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else None


def _address(request: Request) -> str:
    return str(getattr(request.getClientAddress(), "host", "unknown"))


def _form(request: Request) -> dict[bytes, list[bytes]]:
    """The fields of a form-encoded body, and only of the body: a password or token in the query string would
    end up in access logs and browser history, so it is not looked at on a POST."""
    cached: dict[bytes, list[bytes]] | None = getattr(request, "cc_form", None)
    if cached is not None:
        return cached
    form: dict[bytes, list[bytes]] = {}
    ctype = (request.getHeader(b"content-type") or b"").split(b";", 1)[0].strip().lower()
    if ctype == b"application/x-www-form-urlencoded" and request.content is not None:
        request.content.seek(0)
        body = request.content.read(MAX_FORM_BYTES + 1)
        if len(body) > MAX_FORM_BYTES:
            raise AuthError(413, "too_large", "the form is too large")
        try:
            # Latin-1 both ways maps bytes to characters one to one, so the fields come back as the bytes sent
            # and _field can tell (and say) when they are not UTF-8.
            fields = parse_qs(body.decode("latin-1"), keep_blank_values=True, max_num_fields=32, encoding="latin-1")
        except ValueError:
            raise AuthError(400, "bad_request", "the form has too many fields") from None
        form = {k.encode("latin-1"): [v.encode("latin-1") for v in vs] for k, vs in fields.items()}
    request.cc_form = form  # type: ignore[attr-defined]
    return form


def _field(request: Request, name: bytes, limit: int = 1024) -> str | None:
    """A form field of a POST, a query parameter of a GET."""
    source = request.args if request.method in SAFE_METHODS else _form(request)
    values = source.get(name) if source else None
    if not values:
        return None
    raw = values[0]
    if len(raw) > limit:
        raise AuthError(400, "bad_request", f"{name.decode()} is too long")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise AuthError(400, "bad_request", f"{name.decode()} is not UTF-8") from None


def _check_login(conn: Connection, name: str, password: str, dummy_hash: str) -> Credentials | None:
    """The user's credentials if the password is right. An unknown user costs the same scrypt run as a known
    one, so the answer's timing does not tell which names exist."""
    creds = credentials(conn, name)
    ok = check_password(password, creds.password_hash if creds is not None and creds.password_hash else dummy_hash)
    return creds if ok and creds is not None and creds.password_hash else None


@dataclass
class _Pending:
    """A right password waiting for its TOTP code."""

    user_id: str
    expires_ms: int
    next_path: str | None
    attempts: int = 0


@dataclass
class _Page:
    status: int
    body: bytes
    headers: dict[bytes, bytes] = field(default_factory=dict)
    cookies: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- WebAuth


class WebAuth:
    """Sessions and logins for one site. ``now_ms`` defaults to the centre's clock (tests pass a fake)."""

    def __init__(
        self,
        centre: Centre,
        *,
        server: ServerConfig | None = None,
        env: Environment | None = None,
        now_ms: Callable[[], int] | None = None,
    ) -> None:
        from contactcentre.edge.web import make_environment

        server = server or centre.config.server
        self.centre = centre
        self.loop = centre.loop
        self.env = env or make_environment()
        self.config: AuthConfig = server.auth
        self.secure_cookies = server.secure_cookies
        self.now_ms = now_ms or centre.now_ms
        self.idle_ms = round(self.config.session_idle_s * 1000)
        self.max_ms = round(self.config.session_max_s * 1000)
        lock_ms, lock_max_ms = round(self.config.lockout_s * 1000), round(self.config.lockout_max_s * 1000)
        self.by_user = Throttle(self.config.max_failures_per_user, lock_ms, lock_max_ms)
        self.by_address = Throttle(self.config.max_failures_per_address, lock_ms, lock_max_ms)
        self.origins = {o.lower().rstrip("/") for o in self.config.origins}
        self._dummy_hash = hash_password(secrets.token_urlsafe(16))
        self._pending: dict[str, _Pending] = {}
        self._inflight: set[asyncio.Future[Any]] = set()
        # The WebSockets opened with these logins (agent consoles, dashboards), closed when a login ends.
        self.sockets = LiveSockets(centre, self.config.socket_recheck_s, self.now_ms)

    # ------------------------------------------------------------------------------------ the public hooks

    async def authenticate(self, request: Request, role: str | None = None) -> User:
        """The caller, by bearer token or session cookie; raises ``AuthError`` (401, 403).

        With a session, an unsafe method (POST, PUT, PATCH, DELETE) also needs the CSRF token and a matching
        origin. ``role``: the least role allowed (agent < supervisor < admin)."""
        header = request.getHeader(b"authorization")
        if header:
            scheme, _, token = header.decode("latin-1").strip().partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError(401, "unauthorized", "send Authorization: Bearer <token>")
            user = await self.centre.read(user_for_token, token.strip())
            if user is None:
                raise AuthError(401, "unauthorized", "the token is not valid (revoked, or the user is disabled)")
        else:
            session_id = _cookie(request.getHeader(b"cookie"), SESSION_COOKIE.decode())
            user = await self.session_user(session_id) if session_id else None
            if user is None or session_id is None:
                raise AuthError(401, "unauthorized", "log in first (the session is missing or has expired)")
            if request.method not in SAFE_METHODS:
                self.check_unsafe(request, csrf_token(session_id))
            request.cc_csrf = csrf_token(session_id)  # type: ignore[attr-defined]  # for pages with forms
        request.cc_user = user  # type: ignore[attr-defined]
        if role is not None and not user.may(role):
            raise AuthError(403, "forbidden", f"this needs the {role} role; {user.id} is {user.role}")
        return user

    async def session_user(self, session_id: str | None) -> User | None:
        """The user of a live session, or None (unknown, expired, revoked, user disabled)."""
        if not session_id:
            return None
        now = self.now_ms()
        found = await self.centre.read(find_session, session_id, now, self.idle_ms)
        if found is None:
            return None
        session, touch = found
        if touch:
            await self.centre.write(touch_session, session_id, now)
        return session.user

    def allowed_origin(self, origin: str | bytes | None, request: Request | None = None) -> bool:
        """Whether a browser's ``Origin`` is this site: the request's own host, or a configured/added origin."""
        if isinstance(origin, bytes):
            origin = origin.decode("latin-1")
        if not origin or origin == "null":
            return False
        origin = origin.lower().rstrip("/")
        if origin in self.origins:
            return True
        if request is None:
            return False
        host = request.getHeader(b"host")
        if not host:
            return False
        host_s = host.decode("latin-1").lower()
        schemes = ("https",) if request.isSecure() else ("http", "https") if self.secure_cookies else ("http",)
        return any(origin == f"{s}://{host_s}" for s in schemes)

    def add_origin(self, url: str) -> None:
        """Accept the origin of ``url`` (the runtime adds the site's own URL for the WebSocket handshake)."""
        o = origin_of(url)
        if o is not None:
            self.origins.add(o)

    def check_unsafe(self, request: Request, expected_token: str) -> None:
        """Origin (or Referer) of this site and the right CSRF token, or ``AuthError(403)``."""
        origin_header = request.getHeader(b"origin")
        referer = request.getHeader(b"referer")
        if origin_header is not None:
            origin: str | None = origin_header.decode("latin-1")
        elif referer is not None:
            origin = origin_of(referer.decode("latin-1")) or "null"
        else:
            # Neither: not a browser (every current one sends Origin on unsafe methods), so no cross-site
            # forgery is in play; the token below still has to be right.
            origin = None
        if origin is not None and not self.allowed_origin(origin, request):
            raise AuthError(403, "bad_origin", "the request comes from another site (Origin)")
        given = request.getHeader(CSRF_HEADER)
        if given is None:
            field_value = _field(request, CSRF_FIELD, 256)
            given = field_value.encode() if field_value else None
        if not given or not hmac.compare_digest(given, expected_token.encode()):
            raise AuthError(403, "csrf", "the CSRF token is missing or wrong; reload the page")

    def resources(self) -> dict[bytes, Resource]:
        """``/login``, ``/logout`` and ``/agent``, to put at the top of the site."""
        return {
            b"login": _Handler(self, {b"GET": self._login_form, b"POST": self._login_post}),
            b"logout": _Handler(self, {b"POST": self._logout}),
            b"agent": self.guard(_AgentHome(self), "agent"),
        }

    def guard(self, resource: Resource, role: str, *, api: bool = False) -> Resource:
        """``resource`` (a leaf) for users of at least ``role``. Anonymous callers of a page are sent to
        ``/login``; of an API (``api=True``) get 401 JSON. Users below the role get 403."""
        if role not in ROLES:
            raise ValueError(f"role {role!r}: one of {', '.join(ROLES)}")
        return _Guarded(self, resource, role, api)

    async def drain(self) -> None:
        """Wait for the requests in flight (before closing the centre under them); stop rechecking sockets."""
        self.sockets.stop()
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    # ----------------------------------------------------------------------------------------- serving

    def run(self, request: Request, work: Callable[[], Awaitable[Any]], done: Callable[[Any], None]) -> Any:
        """Run ``work()`` on the loop and pass its result to ``done`` unless the client has gone."""
        gone = False

        def lost(_: Failure) -> None:
            nonlocal gone
            gone = True

        request.notifyFinish().addErrback(lost)
        fut = asyncio.ensure_future(work(), loop=self.loop)
        self._inflight.add(fut)
        fut.add_done_callback(self._inflight.discard)

        def answer(result: Any) -> None:
            if gone or request.finished:
                return
            try:
                done(result)
            except Exception:  # the connection broke while writing
                log.warning("web %s: could not send the answer", request.uri, exc_info=True)

        def crashed(failure: Failure) -> None:
            if failure.check(asyncio.CancelledError, DeferredCancelled):
                return
            log.error("web %s failed", request.uri, exc_info=failure.value)
            if not gone and not request.finished:
                self._send(request, self._message_page(500, "Something went wrong", "See the server log."))

        Deferred.fromFuture(fut).addCallbacks(answer, crashed)
        return NOT_DONE_YET

    def _send(self, request: Request, page: _Page) -> None:
        request.setResponseCode(page.status)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"same-origin")
        request.setHeader(b"content-security-policy", _PAGE_CSP)
        for name, value in page.headers.items():
            request.setHeader(name, value)
        for c in page.cookies:
            request.addCookie(**c)
        request.setHeader(b"content-length", b"%d" % len(page.body))
        if request.method != b"HEAD":
            request.write(page.body)
        request.finish()

    def _cookie_args(self, request: Request, name: bytes, value: str, max_age: int | None = None) -> dict[str, Any]:
        return {
            "k": name,
            "v": value.encode(),
            "path": b"/",
            "httpOnly": True,
            "sameSite": "strict",
            "secure": bool(request.isSecure() or self.secure_cookies) or None,
            "max_age": str(max_age).encode() if max_age is not None else None,
        }

    def _render(self, name: str, status: int = 200, **context: Any) -> _Page:
        return _Page(status, self.env.get_template(name).render(**context).encode("utf-8"))

    def _message_page(self, status: int, title: str, text: str, user: User | None = None, csrf: str = "") -> _Page:
        return self._render("auth_message.html", status, title=title, text=text, user=user, csrf=csrf, home=HOME)

    # ------------------------------------------------------------------------------------------- login

    def _login_page(
        self,
        request: Request,
        *,
        error: str = "",
        status: int = 200,
        next_path: str | None = None,
        pending: str | None = None,
        username: str = "",
    ) -> _Page:
        """The form (password step, or TOTP step with ``pending``) with a fresh login cookie for its CSRF."""
        token = secrets.token_urlsafe(32)
        page = self._render(
            "login.html",
            status,
            error=error,
            csrf=token,
            next_path=next_path or "",
            pending=pending or "",
            username=username,
        )
        page.cookies.append(self._cookie_args(request, LOGIN_COOKIE, token, max_age=3600))
        return page

    async def _login_form(self, request: Request) -> _Page:
        next_path = safe_next(_field(request, b"next", 600))
        return self._login_page(request, next_path=next_path)

    async def _login_post(self, request: Request) -> _Page:
        length = request.getHeader(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_FORM_BYTES):
            return self._message_page(413, "Too large", "A login form is never this large.")
        origin = request.getHeader(b"origin")
        if origin is not None and not self.allowed_origin(origin, request):
            raise AuthError(403, "bad_origin", "the login form was posted from another site")
        want = _cookie(request.getHeader(b"cookie"), LOGIN_COOKIE.decode())
        given = _field(request, CSRF_FIELD, 256)
        if not want or not given or not hmac.compare_digest(want.encode(), given.encode()):
            return self._login_page(request, error="The form had expired. Please log in again.", status=403)
        next_path = safe_next(_field(request, b"next", 600))
        pending = _field(request, b"pending", 128)
        if pending:
            return await self._login_totp(request, pending, _field(request, b"code", 64) or "", next_path)
        name = (_field(request, b"username", 256) or "").strip()
        password = _field(request, b"password", 1024) or ""
        return await self._login_password(request, name, password, next_path)

    def _locked(self, name: str, address: str, now: int) -> int:
        # An address counts as the other per-address caps count it (limits.address_key): an IPv6 client is its
        # /64, or it could take a fresh address of its network for every few guesses.
        by_address = self.by_address.retry_after_ms(address_key(address), now)
        return max(self.by_user.retry_after_ms(name.lower(), now), by_address)

    def _locked_page(self, request: Request, wait_ms: int, next_path: str | None) -> _Page:
        wait_s = max(1, -(-wait_ms // 1000))
        page = self._login_page(
            request,
            status=429,
            next_path=next_path,
            error=f"Too many failed attempts. Try again in {wait_s} s.",
        )
        page.headers[b"retry-after"] = str(wait_s).encode()
        return page

    async def _login_password(self, request: Request, name: str, password: str, next_path: str | None) -> _Page:
        address = _address(request)
        now = self.now_ms()
        wait = self._locked(name, address, now)
        if wait:
            await self.centre.write(_audit, now, name, "login.failure", {"reason": "locked", "address": address})
            return self._locked_page(request, wait, next_path)
        # Struck before checking, so that parallel guesses cannot all slip in before the first one fails; a
        # right password takes its strikes back, so only failures count (an office behind one NAT address
        # logging in at the start of a shift is not locked out).
        self.by_user.strike(name.lower(), now)
        self.by_address.strike(address_key(address), now)
        creds = await self.centre.read(_check_login, name, password, self._dummy_hash) if name and password else None
        if creds is None:
            await self.centre.write(_audit, now, name, "login.failure", {"reason": "password", "address": address})
            return self._login_page(
                request, error="Unknown user or wrong password.", next_path=next_path, username=name
            )
        self.by_user.forgive(name.lower())
        self.by_address.forgive(address_key(address))
        user = creds.user
        needs_totp = creds.totp_secret is not None or (self.config.require_totp and user.may("supervisor"))
        if not needs_totp:
            return await self._complete(request, user, address, next_path, "password")
        if creds.totp_secret is None:
            await self.centre.write(
                _audit, now, user.id, "login.failure", {"reason": "totp_not_enrolled", "address": address}
            )
            return self._message_page(
                403,
                "Second factor required",
                "Supervisors and admins need a TOTP second factor here. Ask an administrator to run "
                f"`contactcentre user totp {user.id}` and add the printed key to an authenticator app.",
            )
        token = secrets.token_urlsafe(32)
        self._forget_pending(now)
        self._pending[hashlib.sha256(token.encode()).hexdigest()] = _Pending(user.id, now + TOTP_PENDING_MS, next_path)
        return self._login_page(request, pending=token, next_path=next_path)

    def _forget_pending(self, now: int) -> None:
        for key in [k for k, p in self._pending.items() if p.expires_ms <= now]:
            del self._pending[key]
        while len(self._pending) >= MAX_PENDING:
            del self._pending[next(iter(self._pending))]

    async def _login_totp(self, request: Request, token: str, code: str, next_path: str | None) -> _Page:
        address = _address(request)
        now = self.now_ms()
        key = hashlib.sha256(token.encode()).hexdigest()
        pending = self._pending.get(key)
        if pending is None or pending.expires_ms <= now:
            self._pending.pop(key, None)
            return self._login_page(request, error="The login took too long. Please start again.", next_path=next_path)
        name = pending.user_id
        wait = self._locked(name, address, now)
        if wait:
            del self._pending[key]
            await self.centre.write(_audit, now, name, "login.totp_failure", {"reason": "locked", "address": address})
            return self._locked_page(request, wait, pending.next_path)
        reason = await self._check_totp(name, code.strip().replace(" ", ""), now)
        if reason is not None:
            pending.attempts += 1
            self.by_user.strike(name.lower(), now)
            self.by_address.strike(address_key(address), now)
            await self.centre.write(_audit, now, name, "login.totp_failure", {"reason": reason, "address": address})
            if pending.attempts >= TOTP_ATTEMPTS:
                del self._pending[key]
                return self._login_page(request, error="Too many wrong codes. Please start again.")
            return self._login_page(
                request,
                pending=token,
                next_path=pending.next_path,
                error="That code is wrong or was used already. Wait for the next one.",
            )
        del self._pending[key]
        user = await self.centre.read(credentials, name)
        if user is None:  # disabled while typing the code
            return self._login_page(request, error="Unknown user or wrong password.")
        return await self._complete(request, user.user, address, pending.next_path, "password+totp")

    async def _check_totp(self, name: str, code: str, now: int) -> str | None:
        """None if ``code`` is right and unused, else why not (``wrong``, ``replayed``)."""
        creds = await self.centre.read(credentials, name)
        if creds is None or creds.totp_secret is None:
            return "wrong"
        if not code.isdigit() or len(code) != 6:
            return "wrong"
        totp = pyotp.TOTP(creds.totp_secret)
        step = now // TOTP_STEP_MS
        # One step either side allows for clocks a little apart and a code typed as it changed.
        for candidate in (step - 1, step, step + 1):
            if hmac.compare_digest(totp.generate_otp(candidate), code):
                if creds.totp_last_step is not None and candidate <= creds.totp_last_step:
                    return "replayed"
                return None if await self.centre.write(use_totp_step, name, candidate) else "replayed"
        return "wrong"

    async def _complete(self, request: Request, user: User, address: str, next_path: str | None, how: str) -> _Page:
        """Log ``user`` in: a new session (any old one ended: no fixation), audit, and off to their page."""
        now = self.now_ms()
        old = _cookie(request.getHeader(b"cookie"), SESSION_COOKIE.decode())

        def login(conn: Connection) -> str:
            if old:
                revoke_session(conn, old, now)
            purge_sessions(conn, now)
            session_id = create_session(conn, user.id, now, max_ms=self.max_ms, address=address)
            _audit(conn, now, user.id, "login.success", {"how": how, "address": address})
            return session_id

        session_id = await self.centre.write(login)
        if old:
            self.sockets.end_session(old, "this browser logged in again")
        self.by_user.clear(user.id.lower())
        target = next_path or HOME[user.role]
        page = _Page(303, b"", {b"location": target.encode()})
        page.cookies.append(self._cookie_args(request, SESSION_COOKIE, session_id))
        page.cookies.append(self._cookie_args(request, LOGIN_COOKIE, "", max_age=0))
        return page

    async def _logout(self, request: Request) -> _Page:
        session_id = _cookie(request.getHeader(b"cookie"), SESSION_COOKIE.decode())
        if session_id:
            self.check_unsafe(request, csrf_token(session_id))
            now = self.now_ms()

            def logout(conn: Connection) -> None:
                user_id = revoke_session(conn, session_id, now)
                if user_id is not None:
                    _audit(conn, now, user_id, "logout", {"address": _address(request)})

            await self.centre.write(logout)
            self.sockets.end_session(session_id, "logged out")
        page = _Page(303, b"", {b"location": b"/login"})
        page.cookies.append(self._cookie_args(request, SESSION_COOKIE, "", max_age=0))
        return page


# ---------------------------------------------------------------------------------------------- resources


class _Handler(Resource):
    """A leaf answered by coroutines, one per method; ``AuthError`` becomes a page."""

    isLeaf = True

    def __init__(self, auth: WebAuth, methods: dict[bytes, Callable[[Request], Awaitable[_Page]]]) -> None:
        super().__init__()
        self.auth = auth
        self.methods = methods

    def render(self, request: Request) -> Any:
        if request.postpath not in ([], [b""]):
            return pages.notFound().render(request)
        method = request.method if request.method != b"HEAD" else b"GET"
        handler = self.methods.get(method)
        if handler is None:
            request.setHeader(b"allow", b", ".join(self.methods))
            return pages.errorPage(405, "Method Not Allowed", "Not here.").render(request)

        async def work() -> _Page:
            try:
                return await handler(request)
            except AuthError as exc:
                return self.auth._message_page(exc.status, "Not allowed", exc.detail)

        return self.auth.run(request, work, lambda page: self.auth._send(request, page))


class _Guarded(Resource):
    """Another resource behind ``WebAuth.authenticate``; it renders only for a user of the role."""

    def __init__(self, auth: WebAuth, inner: Resource, role: str, api: bool) -> None:
        super().__init__()
        self.auth = auth
        self.inner = inner
        self.role = role
        self.api = api

    def getChild(self, path: bytes, request: Request) -> Any:
        return pages.notFound()  # guards leaves only: a child would slip past the check

    def render(self, request: Request) -> Any:
        async def work() -> User | AuthError:
            try:
                return await self.auth.authenticate(request, self.role)
            except AuthError as exc:
                return exc

        return self.auth.run(request, work, lambda outcome: self._answer(request, outcome))

    def _answer(self, request: Request, outcome: User | AuthError) -> None:
        if isinstance(outcome, AuthError):
            self._refuse(request, outcome)
            return
        try:
            body = self.inner.render(request)
        except UnsupportedMethod as exc:
            request.setHeader(b"allow", b", ".join(exc.allowedMethods))
            body = pages.errorPage(405, "Method Not Allowed", "Not here.").render(request)
        if body is NOT_DONE_YET:
            return
        request.setHeader(b"content-length", b"%d" % len(body))
        if request.method != b"HEAD":
            request.write(body)
        request.finish()

    def _refuse(self, request: Request, exc: AuthError) -> None:
        if self.api:
            body = json.dumps({"error": exc.code, "detail": exc.detail}).encode()
            request.setResponseCode(exc.status)
            request.setHeader(b"content-type", b"application/json")
            request.setHeader(b"cache-control", b"no-store")
            request.setHeader(b"x-content-type-options", b"nosniff")
            if exc.status == 401:
                request.setHeader(b"www-authenticate", b'Bearer realm="contactcentre"')
            request.setHeader(b"content-length", b"%d" % len(body))
            request.write(body)
            request.finish()
            return
        if exc.status == 401:
            target = b"/login?next=" + quote(request.uri.decode("latin-1"), safe="/").encode()
            self.auth._send(request, _Page(303, b"", {b"location": target}))
            return
        user: User | None = getattr(request, "cc_user", None)
        csrf: str = getattr(request, "cc_csrf", "")
        self.auth._send(request, self.auth._message_page(exc.status, "Not allowed", exc.detail, user, csrf))


class _AgentHome(Resource):
    """Who is logged in: ``/agent`` for a site without the agent WebSocket (tests of the site alone). The
    runtime mounts the console (``contactcentre.edge.web.console.ConsolePage``, same role guard) over it."""

    isLeaf = True

    def __init__(self, auth: WebAuth) -> None:
        super().__init__()
        self.auth = auth

    def render_GET(self, request: Request) -> bytes:
        user: User = request.cc_user  # type: ignore[attr-defined]
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"same-origin")
        request.setHeader(b"content-security-policy", _PAGE_CSP)
        csrf: str = request.cc_csrf  # type: ignore[attr-defined]
        return self.auth.env.get_template("agent.html").render(user=user, csrf=csrf).encode("utf-8")


__all__ = [
    "AuthError",
    "Throttle",
    "WebAuth",
    "csrf_token",
    "origin_of",
    "safe_next",
    "session_cookie",
]
