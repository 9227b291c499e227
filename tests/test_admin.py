"""The administrator's view: ``contactcentre admin show``, the ``/admin`` page (admin role only, escaped, its
disable/enable form with CSRF and errors shown in the page) and the configuration's disposition codes and
canned responses (docs/web.md, "Administration")."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from sqlalchemy import select

from contactcentre.cli import main
from contactcentre.cli.admin import format_text
from contactcentre.config import DEFAULT_CONFIG_PATH, ConfigError, load_config, parse_config
from contactcentre.reporting.admin_view import overview
from contactcentre.store.db import open_store
from contactcentre.store.schema import audit_log
from contactcentre.store.users import add_user, admin_users, set_totp_secret
from tests.browser import LiveServer, login, screenshot, start_live_server, watch
from tests.server_proc import Sink

XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"


# ------------------------------------------------------------------------------------- configuration


def _parse(extra: dict[str, Any]) -> Any:
    return parse_config({"queues": [{"name": "support", "channels": ["chat", "email"]}], **extra}, "centre.toml")


@pytest.mark.parametrize(
    ("extra", "key", "problem"),
    [
        ({"dispositions": {"codes": ["Resolved"]}}, "dispositions.codes[0]", "lower-case letters"),
        ({"dispositions": {"codes": ["ok", "spam", "ok"]}}, "dispositions.codes[2]", "listed more than once"),
        ({"dispositions": {"codes": [""]}}, "dispositions.codes[0]", "lower-case letters"),
        ({"dispositions": {"codes": ["x" * 65]}}, "dispositions.codes[0]", "at most 64"),
        ({"dispositions": {"code": ["ok"]}}, "dispositions", "unknown field 'code'"),
        (
            {"dispositions": {"codes": ["resolved"], "case_status": {"resolvd": "solved"}}},
            "dispositions.case_status.resolvd",
            "not one of dispositions.codes",
        ),
        ({"dispositions": {"case_status": {"Done": "solved"}}}, "dispositions.case_status.Done", "lower-case"),
        (
            {"dispositions": {"case_status": {"done": "new"}}},  # a case never goes back to new
            "dispositions.case_status[...]",
            "Invalid enum value 'new'",
        ),
        ({"canned": [{"name": "hi", "text": " "}]}, "canned[0].text", "must not be empty"),
        ({"canned": [{"name": "", "text": "Hello"}]}, "canned[0].name", "1-64 characters"),
        ({"canned": [{"name": "hi", "text": "x" * 4001}]}, "canned[0].text", "at most 4000"),
        ({"canned": [{"name": "hi", "text": "a"}, {"name": "hi", "text": "b"}]}, "canned[1].name", "more than once"),
        ({"canned": [{"name": "hi", "text": "a", "channel": "voice"}]}, "canned[0].channel", "Invalid enum value"),
        ({"canned": [{"name": "hi"}]}, "canned[0]", "missing required field 'text'"),
    ],
)
def test_bad_disposition_codes_and_canned_responses_name_file_and_key(
    extra: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _parse(extra)
    assert err.value.source == "centre.toml"
    assert err.value.key == key
    assert problem in err.value.problem


def test_the_demo_configuration_has_codes_and_canned_responses() -> None:
    cfg = load_config(DEFAULT_CONFIG_PATH)
    assert "resolved" in cfg.dispositions.codes
    assert {c.channel for c in cfg.canned} == {"chat", "email", None}
    empty = _parse({})
    assert empty.dispositions.codes == [] and empty.canned == []  # both optional
    # every code of the demo says what it does to the case; by default no code moves a case
    assert set(cfg.dispositions.case_status) == set(cfg.dispositions.codes)
    assert cfg.dispositions.case_status["resolved"] == "solved"
    assert empty.dispositions.case_status == {}


# ------------------------------------------------------------------------------------------ the CLI


def _store_with_users(tmp_path: Path) -> Path:
    db = tmp_path / "centre.sqlite"
    engine = open_store(db)
    with engine.begin() as conn:
        add_user(conn, "root", "admin", 0, password="correct horse root")
        add_user(conn, "ada", "agent", 0, display_name="Ada")
        add_user(conn, "nobody", "agent", 0)  # an agent id the configuration does not know
        set_totp_secret(conn, "root", "JBSWY3DPEHPK3PXP")
    engine.dispose()
    return db


def test_admin_show_prints_users_queues_routing_codes_canned_and_ivr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _store_with_users(tmp_path)
    assert main(["admin", "show", "--database-url", str(db)]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"(?m)^  ada +agent, agent ada \(extension 1001\), no TOTP, token only  skills: general 8, technical 9", out
    )
    assert re.search(r"(?m)^  root +admin, TOTP$", out)
    assert "! agent id 'nobody' is not in the configuration" in out
    assert "configured agents without a login: alan, barbara" in out
    assert "support (number 2001): voice, chat, email, callback; skills general 3" in out
    assert "overflow after 90 s: add skill supervisor 1; priority +1" in out
    assert "  strategy = longest_idle" in out
    assert "  away_after_missed_offer = true" in out and "True" not in out and "False" not in out
    assert "resolved, follow_up, escalated" in out
    assert "greeting (chat): Hello, thank you" in out
    assert re.search(r"(?m)^  3000: .*data/ivr/main\.toml$", out)
    assert "JBSWY3DPEHPK3PXP" not in out and "scrypt" not in out  # no secrets, no hashes

    assert main(["admin", "show", "--json", "--database-url", str(db)]) == 0
    view = json.loads(capsys.readouterr().out)
    assert [u["id"] for u in view["users"]] == ["ada", "nobody", "root"]
    assert view["users"][2]["totp"] is True and view["users"][0]["has_password"] is False
    assert [q["name"] for q in view["queues"]] == ["support", "billing", "technical", "sales"]


def test_admin_show_refuses_a_bad_configuration_or_a_missing_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[dispositions]\ncodes = ["Bad Code"]\n', encoding="utf-8")
    db = _store_with_users(tmp_path)
    assert main(["admin", "show", "--config", str(bad), "--database-url", str(db)]) == 2
    assert "bad.toml: dispositions.codes[0]: 'Bad Code'" in capsys.readouterr().err
    assert main(["admin", "show", "--database-url", str(tmp_path / "none.sqlite")]) == 2
    assert "no such database" in capsys.readouterr().err


def test_the_overview_and_its_text_match() -> None:
    cfg = load_config(DEFAULT_CONFIG_PATH)
    rows = [{"id": "x", "display_name": None, "role": "supervisor", "agent_id": None, "disabled": True,
             "has_password": True, "totp": False}]  # fmt: skip
    view = overview(cfg, rows)
    assert view["users"][0]["problem"] == "" and view["users"][0]["skills"] == ""
    assert "x                supervisor, no TOTP, DISABLED" in format_text(view)
    assert view["routing"]["default_capacity"] == "voice 1, chat 3, email 5, callback 1"


# ----------------------------------------------------------------------------------- the /admin page


def _get(live: LiveServer, path: str, token: str | None) -> tuple[int, str, dict[str, str]]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    req = urllib.request.Request(live.url(path), headers={"Authorization": f"Bearer {token}"} if token else {})
    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def _with_xss(text: str) -> str:
    return text + f'\n[[canned]]\nname = "evil"\ntext = "{XSS}"\n'


@pytest.fixture
def admin_server(tmp_path: Path) -> Any:
    """A live server whose configuration has a canned response and a user with script in them."""
    sink = Sink()
    try:
        live = start_live_server(tmp_path, sink, edit=_with_xss)
        engine = open_store(live.database)
        with engine.begin() as conn:
            add_user(conn, "mallory", "agent", 0, agent_id="ken", display_name=XSS)
        engine.dispose()
        try:
            yield live
        finally:
            code, err = live.server.stop()
            assert code == 0 and "Traceback" not in err, err
    finally:
        sink.close()


def test_only_admins_get_the_page_and_everything_on_it_is_escaped(admin_server: LiveServer) -> None:
    live = admin_server
    assert _get(live, "/admin", live.tokens["ada"])[0] == 403
    assert _get(live, "/admin", live.tokens["boss"])[0] == 403
    status, _body, headers = _get(live, "/admin", None)
    assert status == 303 and headers["Location"].startswith("/login?next=")

    # the dashboard leads an admin (and only an admin) to this page
    assert 'href="/admin"' in _get(live, "/", live.tokens["root"])[1]
    assert 'href="/admin"' not in _get(live, "/", live.tokens["boss"])[1]
    status, body, headers = _get(live, "/admin", live.tokens["root"])
    assert status == 200
    assert "script-src" not in headers["Content-Security-Policy"]  # no script on this page at all
    assert headers["Referrer-Policy"] == "same-origin"
    assert XSS not in body and "<script>alert" not in body and "<img src=x" not in body
    assert body.count("&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;") == 2
    for text in ("ada", "boss", "root", "general=8, technical=9", "support", "least_occupied", "wrong_number",
                 "One moment please", "3000", "main.toml", 'title="priority_weight_s"'):  # fmt: skip
        assert text in body, text
    # routing settings in words, not Python's spelling run together ("away_after_missed_offerTrue")
    settings = re.sub(r"\s+", " ", body[body.index('id="routing"') : body.index("</dl>", body.index('id="routing"'))])
    assert ">away after missed offer</dt> <dd>yes</dd>" in settings, settings
    assert ">priority weight</dt> <dd>60 s</dd>" in settings, settings
    assert "True" not in settings and "False" not in settings


def test_an_admin_disables_and_enables_a_user_in_the_browser(admin_server: LiveServer, new_page: Any) -> None:
    live = admin_server
    console = new_page()
    login(console, live, "grace")  # her console is open while she is disabled
    expect(console.locator("#conn")).to_have_text("connected")
    page = new_page()
    login(page, live, "root")
    page.goto(live.url("/admin"))
    row = page.locator("#users tr[data-user=grace]")
    expect(row.locator(".status")).to_have_text("active")
    # what a user typed (a display name) and what the configuration says (a canned text) show as text
    expect(page.locator("#users tr[data-user=mallory] td").first).to_have_text(XSS)
    expect(page.locator("#canned tr", has_text="evil").locator("td.text")).to_have_text(XSS)
    assert page.locator("main img, main script").count() == 0

    row.get_by_role("button", name="Disable").click()
    expect(page.locator("#notice")).to_have_text("User grace disabled.")
    expect(row.locator(".status")).to_have_text("disabled")
    assert _get(live, "/api/me", live.tokens["grace"])[0] == 401  # her tokens went with it
    # ... and her open console, at once, saying why
    expect(console.locator("#notice")).to_have_text(
        "Not connected: your user was disabled by an administrator. Log in again."
    )
    expect(console.locator("#conn")).to_have_text("not connected")
    row.get_by_role("button", name="Enable").click()
    expect(row.locator(".status")).to_have_text("active")

    # refused changes come back as the page with the reason (the page offers no button for either)
    expect(page.locator("#users tr[data-user=root] button")).to_have_count(0)
    for user, action, error in (("root", "disable", "You cannot disable yourself"),
                                ("nosuch", "disable", "There is no user 'nosuch'."),
                                ("ada", "delete", "Unknown action 'delete'")):  # fmt: skip
        page.evaluate(
            "([user, action]) => { const f = document.querySelector('#users form[action=\"/admin\"]');"
            " f.querySelector('[name=user]').value = user; f.querySelector('button').value = action; }",
            [user, action],
        )
        with page.expect_response(live.url("/admin")) as answer:
            page.locator("#users form[action='/admin'] button").first.click()
        assert answer.value.status == 400
        expect(page.locator("#error")).to_contain_text(error)
    expect(page.locator("#users tr[data-user=root] .status")).to_have_text("active")
    expect(page.locator("#users tr[data-user=ada] .status")).to_have_text("active")
    # a form post without the CSRF token (as from another site's page) changes nothing
    forged = page.request.post(live.url("/admin"), form={"user": "ada", "action": "disable"})
    assert forged.status == 403
    assert _get(live, "/api/me", live.tokens["ada"])[0] == 200
    assert watch(page).dialogs == []

    engine = open_store(live.database)
    with engine.connect() as conn:
        audited = conn.execute(select(audit_log.c.actor, audit_log.c.action).where(audit_log.c.action.like("user.%")))
        assert list(audited) == [("root", "user.disable"), ("root", "user.enable")]
        assert {u["id"]: u["disabled"] for u in admin_users(conn)}["grace"] is False
    engine.dispose()


def test_agents_and_supervisors_are_refused_the_admin_page_in_the_browser(
    live_server: LiveServer, new_page: Any
) -> None:
    admin = new_page()
    login(admin, live_server, "root")
    admin.goto(live_server.url("/admin"))
    expect(admin.locator("#users tbody tr")).to_have_count(4)
    screenshot(admin, "admin", full_page=True)
    page = new_page()
    login(page, live_server, "ada")
    response = page.goto(live_server.url("/admin"))
    assert response is not None and response.status == 403
    expect(page.locator("#message")).to_contain_text("admin role")
    supervisor = new_page()
    login(supervisor, live_server, "boss")
    response = supervisor.goto(live_server.url("/admin"))
    assert response is not None and response.status == 403


def _api_agent_skills(live: LiveServer, agent_id: str) -> dict[str, int]:
    status, body, _ = _get(live, "/api/live", live.tokens["boss"])
    assert status == 200, body
    agents = {a["id"]: a for a in json.loads(body)["agents"]}
    return agents[agent_id]["skills"]


def test_an_admin_adds_a_user_sets_skills_and_resets_a_password_in_the_page(
    admin_server: LiveServer, new_page: Any
) -> None:
    live = admin_server
    page = new_page()
    login(page, live, "root")
    page.goto(live.url("/admin"))

    # add a user: the token is shown once, in the page (not in a URL), and works
    form = page.locator("#add-user")
    form.get_by_label("Name", exact=True).fill("zoe")
    form.get_by_label("Display name").fill("Zoë <b>Z</b>")
    form.get_by_label("Role").select_option("agent")
    form.get_by_label("Agent id").fill("ken")
    form.get_by_label("Password").fill("zoe's pass phrase")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator("#notice")).to_have_text("User zoe created (agent, with a password).")
    token = page.locator("#secret").inner_text().split(": ", 1)[1].split()[0]
    assert "zoe" not in page.url and token not in page.url
    row = page.locator("#users tr[data-user=zoe]")
    expect(row.locator("td").first).to_have_text("Zoë <b>Z</b>")
    assert _get(live, "/api/me", token)[0] == 200
    page.goto(live.url("/admin"))
    expect(page.locator("#secret")).to_have_count(0)  # shown once
    zoe = new_page()
    login(zoe, live, "zoe", password="zoe's pass phrase")
    expect(zoe).to_have_url(live.url("/agent"))

    # refusals keep what the others have and say why
    form.get_by_label("Name", exact=True).fill("ada")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator("#error")).to_have_text("User 'ada' exists already.")
    form.get_by_label("Name", exact=True).fill("bad name!")
    form.get_by_role("button", name="Add user").click()
    expect(page.locator("#error")).to_contain_text("letters, digits and . _ @ - only")

    # an agent's skills, from its row: the router has them at once (the same change as the dashboard's)
    skills = page.locator("#users tr[data-user=ada] td.skills")
    expect(skills.locator("input[name=skills]")).to_have_value("general=8, technical=9, dutch=5")
    skills.locator("input[name=skills]").fill("general=8, billing=6")
    skills.get_by_role("button", name="Save").click()
    expect(page.locator("#notice")).to_have_text("Skills of agent ada: general 8, billing 6.")
    expect(page.locator("#users tr[data-user=ada] td.skills input[name=skills]")).to_have_value("general=8, billing=6")
    assert _api_agent_skills(live, "ada") == {"general": 8, "billing": 6}
    for typed, error in (
        ("general=11", "general=11: a level is 1 to 10"),
        ("general", "is not NAME=LEVEL"),
        (" ", "at least one"),
    ):
        page.locator("#users tr[data-user=ada] td.skills input[name=skills]").fill(typed)
        with page.expect_response(lambda r: "/admin" in r.url and r.request.method == "POST") as answer:
            page.locator("#users tr[data-user=ada] td.skills").get_by_role("button", name="Save").click()
        assert answer.value.status == 400
        expect(page.locator("#error")).to_contain_text(error)
    assert _api_agent_skills(live, "ada") == {"general": 8, "billing": 6}

    # reset grace's password: a generated one, shown once; her open session ends, the new password works
    grace = new_page()
    login(grace, live, "grace")
    reset = page.locator("#reset-password")
    reset.get_by_label("User").select_option("grace")
    reset.get_by_role("button", name="Set password").click()
    expect(page.locator("#notice")).to_have_text("New password for grace; 1 web session ended.")
    new_password = page.locator("#secret").inner_text().split(": ", 1)[1].split()[0]
    grace.goto(live.url("/agent"))
    expect(grace).to_have_url(re.compile(r"/login"))
    live.passwords["grace"] = new_password
    login(grace, live, "grace")
    expect(grace).to_have_url(live.url("/agent"))
    reset.get_by_label("New password").fill("short")
    reset.evaluate("f => f.noValidate = true")  # past the browser's own minlength check, to the server's
    reset.get_by_role("button", name="Set password").click()
    expect(page.locator("#error")).to_have_text("The password must have at least 8 characters.")
    assert watch(page).dialogs == []

    engine = open_store(live.database)
    with engine.connect() as conn:
        audited = conn.execute(select(audit_log.c.actor, audit_log.c.action).where(audit_log.c.action.like("user.%")))
        assert list(audited) == [("root", "user.add"), ("root", "user.password_reset")]
    engine.dispose()
