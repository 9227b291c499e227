"""The REST API's OpenAPI document: a valid OpenAPI 3.1 document, served to anyone at /api/openapi.json, the
same as docs/openapi.json, and naming exactly the routes the server has, each with the role it needs.

The server's routes come from its own resource tree (the site ``DashboardSite`` serves, walked from
``/api``), not from a list kept here; ``UPDATE_DOCS=1`` rewrites docs/openapi.json after a change.
"""

from __future__ import annotations

import asyncio
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import validate
from twisted.web.resource import Resource

from contactcentre.config import ServerConfig, parse_config
from contactcentre.edge.web import DashboardSite
from contactcentre.edge.web import api as api_module
from contactcentre.edge.web.api import Api
from contactcentre.edge.web.auth import WebAuth, _Guarded
from contactcentre.edge.web.openapi import PATH, document, document_json, route_table
from contactcentre.server.runtime import close_centre, open_centre

DOCS = Path(__file__).resolve().parent.parent / "docs"
CONFIG = parse_config(
    {
        "skills": {"general": "General"},
        "queues": [{"name": "support", "skills": {"general": 1}, "channels": ["chat", "voice"]}],
        "agents": [{"id": "a1", "skills": {"general": 5}}],
    },
    "<test>",
)
ROUTES_START = "<!-- routes: generated from contactcentre/edge/web/openapi.py -->\n"
ROUTES_END = "<!-- /routes -->"
STALE = "is stale: UPDATE_DOCS=1 pytest tests/test_openapi.py rewrites it"
ANY_ID = b"x"  # what a collection is asked for: any id makes the same kind of child


@pytest.fixture
def site(
    reactor_loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> Iterator[tuple[DashboardSite, int, asyncio.AbstractEventLoop]]:
    from twisted.internet import reactor

    loop = reactor_loop
    centre = loop.run_until_complete(open_centre(CONFIG, f"sqlite:///{tmp_path / 's.sqlite'}", loop=loop))
    auth = WebAuth(centre, server=ServerConfig(), now_ms=centre.now_ms)
    factory = DashboardSite(centre.driver, auth=auth, api=Api(centre, web_auth=auth).children())
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    try:
        yield factory, port.getHost().port, loop
    finally:
        loop.run_until_complete(port.stopListening().asFuture(loop))
        loop.run_until_complete(factory.close_connections())
        loop.run_until_complete(close_centre(centre))


def _names_to_try(node: Resource) -> set[bytes]:
    """The child names a resource answers to. Static children are listed; the API's nodes make theirs in
    ``getChild``, so try the names that code holds (its string constants) and the contact actions' table."""
    names = set(node.children)
    code = type(node).getChild.__code__
    names |= {c.encode() if isinstance(c, str) else c for c in code.co_consts if isinstance(c, str | bytes)}
    return names | {a.encode() for a in api_module.CONTACT_ACTIONS}


def server_routes(node: Resource, path: str) -> dict[tuple[str, str], str | None]:
    """{(path, method): minimum role} for every operation under ``node``, walking the resource tree."""
    if isinstance(node, _Guarded):  # a leaf behind a web login: GET for the guard's role
        return {(path, "get"): node.role}
    routes: dict[tuple[str, str], str | None] = {}
    if isinstance(node, api_module._Endpoint):
        routes |= {(path, m.decode().lower()): role for m, (role, _) in node.methods.items()}
    elif getattr(node, "isLeaf", False):  # a plain twisted.web leaf (the document itself): its render_ methods
        return {(path, m[7:].lower()): None for m in dir(node) if m.startswith("render_") and m != "render_HEAD"}
    if isinstance(node, api_module._Collection | api_module._ContactsEndpoint):
        # the first id in a path is {id}; one nested under it is named after its collection (messages: {message})
        name = "{id}" if "{id}" not in path else "{" + path.rsplit("/", 1)[-1].removesuffix("s") + "}"
        routes |= server_routes(node.getChild(ANY_ID, None), f"{path}/{name}")
    else:
        missing = type(node.getChild(b"\0none\0", None))  # what this node answers for a name it lacks
        for name in sorted(_names_to_try(node)):
            child = node.children.get(name) or node.getChild(name, None)
            if not isinstance(child, missing):
                routes |= server_routes(child, f"{path}/{name.decode()}")
    return routes


def document_routes() -> dict[tuple[str, str], str | None]:
    methods = {"get", "post", "put", "patch", "delete"}
    return {
        (path, method): op["x-minimum-role"]
        for path, item in document()["paths"].items()
        for method, op in item.items()
        if method in methods
    }


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    for (path, method), _ in document_routes().items():
        op = document()["paths"][path][method]
        assert op["summary"] and op["description"].startswith("Who: "), (path, method)
        assert "200" in op["responses"], (path, method)


def test_the_document_names_every_route_of_the_server_and_no_other(
    site: tuple[DashboardSite, int, asyncio.AbstractEventLoop],
) -> None:
    factory, _, _ = site
    api_node = factory.wrappedFactory.resource.children[b"api"]
    served = server_routes(api_node, "/api")
    assert ("/api/agents/{id}/state", "post") in served and ("/api/live", "get") in served  # the walk works
    described = document_routes()
    assert sorted(set(served) - set(described)) == [], "routes the server has and the document lacks"
    assert sorted(set(described) - set(served)) == [], "routes the document names and the server lacks"
    wrong = {k: (described[k], role) for k, role in served.items() if described[k] != role}
    assert not wrong, f"x-minimum-role differs from the server's (document, server): {wrong}"


def test_anyone_may_read_the_document_and_it_is_the_one_in_docs(
    site: tuple[DashboardSite, int, asyncio.AbstractEventLoop],
) -> None:
    _, port, loop = site
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def get() -> tuple[int, str, bytes]:
        with opener.open(f"http://127.0.0.1:{port}{PATH}", timeout=10) as resp:  # no token, no session
            return resp.status, resp.headers["content-type"], resp.read()

    status, ctype, body = loop.run_until_complete(loop.run_in_executor(None, get))
    assert status == 200 and ctype == "application/json"
    served: dict[str, Any] = json.loads(body)
    assert served == document()
    if os.environ.get("UPDATE_DOCS"):
        (DOCS / "openapi.json").write_bytes(document_json())
    assert (DOCS / "openapi.json").read_bytes() == document_json(), f"docs/openapi.json {STALE}"


def test_docs_api_md_lists_the_operations_of_the_document() -> None:
    path = DOCS / "api.md"
    before, start, tail = path.read_text(encoding="utf-8").partition(ROUTES_START)
    table, end, after = tail.partition(ROUTES_END)
    assert start and end, "docs/api.md lacks its routes markers"
    if os.environ.get("UPDATE_DOCS"):
        table = route_table()
        path.write_text(before + start + table + end + after, encoding="utf-8")
    assert table == route_table(), f"docs/api.md's table of operations {STALE}"
