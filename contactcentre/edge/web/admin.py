"""``/admin``: the administrator's page (admin role only, ``docs/web.md``).

It shows what ``contactcentre admin show`` prints (``reporting/admin_view.py``): users from the database, queues,
routing settings, disposition codes, canned responses and IVR files from the configuration. Its forms
(``POST /admin``, CSRF-checked by the guard) disable or enable a user — a done change is a redirect to the
page (303), so reloading does not post again — and, with ``?form=add|skills|password``, add a user, set an
agent's skills or reset a password through the store functions ``contactcentre user`` uses (and the REST
API's skills change, ``agent_actions``); those answer with the page itself, which shows a new token or a
generated password once. A refused change comes back as the page with the reason (400). Everything else
changes in the configuration file or with ``contactcentre user ...``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
from jinja2 import Environment
from twisted.web.resource import Resource
from twisted.web.server import Request

from contactcentre.edge.web.api import SkillsChange
from contactcentre.edge.web.auth import _PAGE_CSP, AuthError, _audit, _field
from contactcentre.reporting.admin_view import overview
from contactcentre.server.agent_actions import AgentChangeRefused, change_skills
from contactcentre.store.schema import ROLES
from contactcentre.store.users import UserError, add_user, admin_users, check_new_password, reset_password, set_disabled

if TYPE_CHECKING:
    from contactcentre.edge.web.auth import WebAuth
    from contactcentre.store.users import User

ACTIONS = {"disable": True, "enable": False}


class AdminPage(Resource):
    """A leaf behind ``auth.guard(..., "admin")``: the guard has set ``request.cc_user`` and ``cc_csrf``."""

    isLeaf = True

    def __init__(self, auth: WebAuth, env: Environment) -> None:
        super().__init__()
        self.auth = auth
        self.centre = auth.centre
        self.template = env.get_template("admin.html")

    def render_GET(self, request: Request) -> Any:
        async def work() -> tuple[int, str, str]:
            return 200, "", await self._body(request, notice=_notice(request))

        return self.auth.run(request, work, lambda out: self._send(request, *out))

    def render_POST(self, request: Request) -> Any:
        if request.args.get(b"form"):  # ?form=add|skills|password: the forms beside disable/enable
            return self._render_form(request)
        admin: User = request.cc_user  # type: ignore[attr-defined]

        async def work() -> tuple[int, str, str]:
            try:
                name, action = _field(request, b"user", 128) or "", _field(request, b"action", 16) or ""
            except AuthError as exc:
                return 400, "", await self._body(request, error=exc.detail)
            error = ""
            if action not in ACTIONS:
                error = f"Unknown action {action!r}: disable or enable."
            elif not name:
                error = "Which user? The form named none."
            elif name == admin.id and ACTIONS[action]:
                error = "You cannot disable yourself: another admin has to (or `contactcentre user disable`)."
            if not error:
                now = self.centre.now_ms()
                changed = await self.centre.write(_change, name, ACTIONS[action], now, admin.id)
                if changed is None:
                    error = f"There is no user {name!r}."
                elif ACTIONS[action]:
                    self.auth.sockets.end_user(name, "your user was disabled by an administrator")
            if error:
                return 400, "", await self._body(request, error=error)
            return 303, f"/admin?done={action}d&user={quote(name)}", ""

        return self.auth.run(request, work, lambda out: self._send(request, *out))

    async def _body(self, request: Request, *, error: str = "", notice: str = "", secret: str = "") -> str:
        rows = await self.centre.read(admin_users)
        return self.template.render(
            view=overview(self.centre.config, rows),
            user=request.cc_user,  # type: ignore[attr-defined]
            csrf=getattr(request, "cc_csrf", ""),  # none with a bearer token: those posts need no CSRF token
            error=error,
            notice=notice,
            secret=secret,
            skills=self._live_skills(),
            roles=ROLES,
        )

    def _live_skills(self) -> dict[str, str]:
        """Each agent's skills as the router has them now (a change from this page or the dashboard included),
        in the form the skills box takes: ``general=8, technical=9``."""
        return {a.id: ", ".join(f"{k}={v}" for k, v in a.skills.items()) for a in self.centre.router.agent_list()}

    # ---------------------------------------------------------- add a user, set skills, reset a password

    def _render_form(self, request: Request) -> Any:
        admin: User = request.cc_user  # type: ignore[attr-defined]
        form = request.args.get(b"form", [b""])[0].decode("latin-1")
        handler = {"add": self._add_user, "skills": self._set_skills, "password": self._reset_password}.get(form)

        async def work() -> tuple[int, str, str]:
            if handler is None:
                return 400, "", await self._body(request, error=f"Unknown form {form!r}: add, skills or password.")
            try:
                notice, secret = await handler(request, admin)
            except (AuthError, FormError) as exc:
                error = exc.detail if isinstance(exc, AuthError) else str(exc)
                return 400, "", await self._body(request, error=error)
            # The page itself, not a redirect: a token or generated password is shown this once, never in a URL.
            return 200, "", await self._body(request, notice=notice, secret=secret)

        return self.auth.run(request, work, lambda out: self._send(request, *out))

    async def _add_user(self, request: Request, admin: User) -> tuple[str, str]:
        """``contactcentre user add`` in the page: the new API token is shown once; no password is token-only."""
        name = _field(request, b"name", 128) or ""
        role = _field(request, b"role", 16) or ""
        agent_id = (_field(request, b"agent_id", 128) or "").strip() or None
        display_name = (_field(request, b"display_name", 200) or "").strip() or None
        password = _field(request, b"password", 1024) or ""
        if password:
            _checked(check_new_password, password)
        token = await self.centre.write(
            _add, name, role, agent_id, display_name, password or None, self.centre.now_ms(), admin.id
        )
        login = "with a password" if password else "token only (no password: it cannot log in to the pages)"
        return f"User {name} created ({role}, {login}).", f"API token for {name} (shown once): {token}"

    async def _set_skills(self, request: Request, admin: User) -> tuple[str, str]:
        """The dashboard's skills change (``POST /api/agents/{id}/skills``) for an agent, from its row."""
        agent_id = _field(request, b"agent", 128) or ""
        skills = parse_skills(_field(request, b"skills", 2000) or "")
        try:
            await change_skills(self.centre, agent_id, skills, None)
        except AgentChangeRefused as exc:
            raise FormError(str(exc)) from None
        shown = ", ".join(f"{k} {v}" for k, v in skills.items()) or "none"
        return f"Skills of agent {agent_id}: {shown}.", ""

    async def _reset_password(self, request: Request, admin: User) -> tuple[str, str]:
        """``contactcentre user password``: a typed password, or (left empty) a generated one shown once."""
        name = _field(request, b"user", 128) or ""
        typed = _field(request, b"password", 1024) or ""
        password = typed or secrets.token_urlsafe(18)
        ended = await self.centre.write(_new_password, name, password, self.centre.now_ms(), admin.id)
        self.auth.sockets.end_user_sessions(name, "your password was reset by an administrator: log in again")
        notice = f"New password for {name}; {ended} web session{'s' * (ended != 1)} ended."
        return notice, "" if typed else f"Password for {name} (shown once): {password}"

    def _send(self, request: Request, status: int, location: str, body: str) -> None:
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        # The page's forms post: under no-referrer a browser would send "Origin: null", which CSRF refuses.
        request.setHeader(b"referrer-policy", b"same-origin")
        request.setHeader(b"content-security-policy", _PAGE_CSP)
        if location:
            request.setHeader(b"location", location.encode())
        data = body.encode("utf-8")
        request.setHeader(b"content-length", b"%d" % len(data))
        if request.method != b"HEAD":
            request.write(data)
        request.finish()


def _change(conn: Any, name: str, disabled: bool, now_ms: int, actor: str) -> int | None:
    """Disable (revoking tokens and sessions) or enable, audited; None: no such user."""
    done = set_disabled(conn, name, disabled, now_ms)
    if done is not None:
        _audit(conn, now_ms, actor, "user.disable" if disabled else "user.enable", {"user": name, "via": "web"})
    return done


class FormError(Exception):
    """A form's input refused: the message goes in the page's red box (status 400)."""


def _checked(fn: Any, *args: Any) -> Any:
    """``fn(*args)`` with the store's ``UserError`` (a bad name, role or password) as a ``FormError``."""
    try:
        return fn(*args)
    except UserError as exc:
        raise FormError(str(exc)[:1].upper() + str(exc)[1:] + ".") from None


def _add(
    conn: Any, name: str, role: str, agent_id: str | None, display_name: str | None, password: str | None,
    now_ms: int, actor: str,
) -> str:  # fmt: skip
    token = _checked(
        lambda: add_user(conn, name, role, now_ms, agent_id=agent_id, display_name=display_name, password=password)
    )
    _audit(conn, now_ms, actor, "user.add", {"user": name, "role": role, "via": "web"})
    return token


def _new_password(conn: Any, name: str, password: str, now_ms: int, actor: str) -> int:
    ended = _checked(reset_password, conn, name, password, now_ms)
    if ended is None:
        raise FormError(f"There is no user {name!r}.")
    _audit(conn, now_ms, actor, "user.password_reset", {"user": name, "via": "web"})
    return ended


def parse_skills(text: str) -> dict[str, int]:
    """``general=8, billing 5`` → ``{"general": 8, "billing": 5}``, checked as the REST API checks them."""
    skills: dict[str, Any] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, level = part.replace("=", " ").strip().rpartition(" ")
        if not sep or not name.strip() or not level.isdigit():
            raise FormError(f"Skills: {part.strip()!r} is not NAME=LEVEL (e.g. general=8, billing=5).")
        skills[name.strip()] = int(level)
    if not skills:  # an emptied box is more likely a slip than an agent meant to take nothing
        raise FormError("Skills: give at least one, e.g. general=8.")
    for name, level in skills.items():  # said in the page's words, before the API's own check below
        if not 1 <= level <= 10:
            raise FormError(f"Skills: {name}={level}: a level is 1 to 10.")
    try:
        return msgspec.convert({"skills": skills}, SkillsChange).skills or {}
    except msgspec.ValidationError as exc:
        raise FormError(f"Skills: {exc} (levels are 1-10).") from None


def _notice(request: Request) -> str:
    """The line after a redirect from a done change (``?done=disabled&user=NAME``); shown escaped."""
    done = request.args.get(b"done", [b""])[0].decode("utf-8", "replace")
    user = request.args.get(b"user", [b""])[0].decode("utf-8", "replace")[:128]
    return f"User {user} {done}." if done in ("disabled", "enabled") and user else ""
