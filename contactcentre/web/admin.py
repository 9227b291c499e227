"""``/admin``: the administrator's page (admin role only, ``docs/web.md``).

It shows what ``contactcentre admin show`` prints (``admin_cli.overview``): users from the database, queues,
routing settings, disposition codes, canned responses and IVR files from the configuration. Its one form
disables or enables a user (``POST /admin``, CSRF-checked by the guard); a refused change comes back as the
page with the reason (400), a done one as a redirect to the page (303), so reloading does not post again.
Everything else changes in the configuration file or with ``contactcentre user ...``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jinja2 import Environment
from twisted.web.resource import Resource
from twisted.web.server import Request

from contactcentre.admin_cli import admin_users, overview
from contactcentre.store.users import set_disabled
from contactcentre.web.auth import _PAGE_CSP, AuthError, _audit, _field

if TYPE_CHECKING:
    from contactcentre.store.users import User
    from contactcentre.web.auth import WebAuth

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

    async def _body(self, request: Request, *, error: str = "", notice: str = "") -> str:
        rows = await self.centre.read(admin_users)
        return self.template.render(
            view=overview(self.centre.config, rows),
            user=request.cc_user,  # type: ignore[attr-defined]
            csrf=getattr(request, "cc_csrf", ""),  # none with a bearer token: those posts need no CSRF token
            error=error,
            notice=notice,
        )

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


def _notice(request: Request) -> str:
    """The line after a redirect from a done change (``?done=disabled&user=NAME``); shown escaped."""
    done = request.args.get(b"done", [b""])[0].decode("utf-8", "replace")
    user = request.args.get(b"user", [b""])[0].decode("utf-8", "replace")[:128]
    return f"User {user} {done}." if done in ("disabled", "enabled") and user else ""
