"""The REST API's reference: an OpenAPI 3.1 document, served at ``/api/openapi.json`` and kept in
``docs/openapi.json`` (``python -m contactcentre.edge.web.openapi > docs/openapi.json``; a test fails when the two
differ or when the document and the server's route table disagree).

The document is built from the same things the API runs on wherever they exist — the request bodies'
msgspec structs and ``CONTACT_ACTIONS`` (``edge/web/api.py``), the screen-pop's structs, the case store's columns,
the roles — so it cannot drift from them; what the handlers build as plain dicts is described here.

Anyone may read the document (no token): it says what the API accepts, never what the centre holds, and a
client writer needs it before they have a token.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any

import msgspec
from twisted.web.resource import Resource
from twisted.web.server import Request

from contactcentre.acd import CONTACT_STATES
from contactcentre.edge.web.api import (
    CONTACT_ACTIONS,
    CONTACTS_LIMIT,
    CONTACTS_LIMIT_MAX,
    MAX_BODY,
    SkillsChange,
    StateChange,
)
from contactcentre.events import AGENT_STATES, CHANNELS
from contactcentre.store.caseview import interaction_row_schema
from contactcentre.store.schema import ROLES
from contactcentre.store.screenpop import ScreenPop
from contactcentre.store.transcripts import message_row_schema

PATH = "/api/openapi.json"
_REF = "#/components/schemas/{name}"

# --------------------------------------------------------------------------------------- schema helpers


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(name=name)}


def _obj(required: tuple[str, ...] | list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(required), "properties": props}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


_S = {"type": "string"}
_I = {"type": "integer"}
_N = {"type": "number"}
_B = {"type": "boolean"}
_POSITIVE = {"type": "integer", "minimum": 1}
_MS = {"type": "integer", "description": "milliseconds since the Unix epoch"}


# ------------------------------------------------------------------------------------------- schemas


def _message_columns() -> dict[str, Any]:
    """A transcript message: the store's columns, its body's whole length and whether the body was cut."""
    schema = message_row_schema()
    schema["properties"] |= {"length": _nullable({"type": "integer"}), "truncated": {"type": "boolean"}}
    schema["required"] += ["length", "truncated"]
    return schema


def _schemas() -> dict[str, Any]:
    bodies = [StateChange, SkillsChange, ScreenPop, *dict.fromkeys(t for t, _ in CONTACT_ACTIONS.values())]
    _, generated = msgspec.json.schema_components(bodies, ref_template=_REF)
    channel = {"enum": list(CHANNELS)}
    return {
        **generated,
        "Error": _obj(
            ("error", "detail"),
            error={**_S, "description": "a code: unauthorized, forbidden, not_found, bad_request, bad_json, …"},
            detail={**_S, "description": "what went wrong, in words"},
            reason={**_S, "description": "a contact action's refusal: the channel's own code"},
        ),
        "Me": _obj(
            ("id", "role", "agent_id", "display_name"),
            id=_S,
            role={"enum": list(ROLES)},
            agent_id=_nullable(_S),
            display_name=_nullable(_S),
        ),
        "Queue": _obj(
            (
                "name",
                "description",
                "channels",
                "waiting",
                "waiting_by_channel",
                "longest_wait_s",
                "offered",
                "with_agents",
                "ewt_s",
                "agents_serving",
                "agents_ready",
                "today",
            ),
            name=_S,
            description=_S,
            channels={"type": "array", "items": channel},
            waiting={**_I, "description": "contacts queued now"},
            waiting_by_channel={"type": "object", "additionalProperties": _I},
            longest_wait_s=_N,
            offered={**_I, "description": "contacts ringing an agent now"},
            with_agents={**_I, "description": "contacts an agent has now"},
            ewt_s={
                "type": "object",
                "additionalProperties": _nullable(_N),
                "description": "per channel, what a contact arriving now would be told (null: no estimate)",
            },
            agents_serving=_I,
            agents_ready=_I,
            today={
                "type": "object",
                "description": "today's figures (offered, answered, abandoned, service levels, ASA, AHT, …), "
                "as on the dashboard (docs/web.md)",
            },
        ),
        "Queues": _obj(("at_ms", "queues"), at_ms=_MS, queues={"type": "array", "items": _ref("Queue")}),
        "Contact": _obj(
            (
                "id",
                "channel",
                "queue",
                "state",
                "customer_id",
                "tier",
                "priority",
                "waiting_since_ms",
                "wait_s",
                "agent_id",
                "offer_expires_ms",
                "connected_ms",
                "sla_deadline_ms",
                "position",
            ),
            id=_S,
            channel=channel,
            queue=_S,
            state={"enum": list(CONTACT_STATES)},
            customer_id=_nullable(_S),
            tier=_nullable(_S),
            priority=_I,
            waiting_since_ms=_MS,
            wait_s={**_nullable(_N), "description": "while queued or offered"},
            agent_id=_nullable(_S),
            offer_expires_ms=_nullable(_I),
            connected_ms=_nullable(_I),
            sla_deadline_ms=_nullable(_I),
            position={**_nullable(_I), "description": "1 = next among the contacts waiting for the same agents"},
        ),
        "Contacts": _obj(
            ("at_ms", "total", "truncated", "contacts"),
            at_ms=_MS,
            total={**_I, "description": "how many matched"},
            truncated={**_B, "description": "more matched than limit"},
            contacts={"type": "array", "items": _ref("Contact")},
        ),
        "AgentState": _obj(
            ("id", "name", "state", "reason", "presence", "away_reason", "since_ms", "load"),
            id=_S,
            name=_S,
            state={"enum": sorted(AGENT_STATES)},
            reason=_nullable(_S),
            presence={**_S, "description": "what the agent chose; away takes effect when open work ends"},
            away_reason=_nullable(_S),
            since_ms=_MS,
            load={"type": "object", "additionalProperties": _I, "description": "open contacts per channel"},
        ),
        "ActionResult": {
            **_obj(
                ("action", "agent_id", "state", "handled_by"),
                action={"enum": list(CONTACT_ACTIONS)},
                agent_id={**_nullable(_S), "description": "the agent the action was done as"},
                state={**_nullable(_S), "description": "the contact's state afterwards (null: it has ended)"},
                handled_by=_nullable(_S),
            ),
            "additionalProperties": True,
            "description": "and what the action reports (e.g. a consultation's call id, a callback's id)",
        },
        "Leg": {
            **_obj(("agent_id", "outcome"), agent_id=_S, outcome=_nullable(_S)),
            "additionalProperties": True,
            "description": "an offer that rang out or was turned down (no_answer, rejected: offered_until_ms), "
            "or a time an agent had the contact (handled, transferred, null while open: queue, answered_ms, "
            "wait_ms, ended_ms, talk_ms, hold_ms, wrap_ms, conferenced, to)",
        },
        "Legs": _obj(("contact_id", "legs"), contact_id=_S, legs={"type": "array", "items": _ref("Leg")}),
        "Message": {
            **_message_columns(),
            "description": "a message of the transcript; a body longer than [server.transcripts] body_chars is "
            "cut (truncated: true, length: the whole body's characters; GET /api/cases/{id}/messages/{message} "
            "gives it whole)",
        },
        "Case": _obj(
            ("case", "interactions", "messages", "messages_before"),
            case={"type": "object", "description": "the case row (docs/store.md, table cases)"},
            interactions={
                "type": "array",
                "items": {
                    **interaction_row_schema(),
                    "additionalProperties": True,
                    "description": "an interaction (docs/store.md) and its legs",
                },
            },
            messages={"type": "array", "items": _ref("Message"), "description": "the newest page, oldest first"},
            messages_before=_nullable(
                {**_S, "description": "the cursor of the page of older messages (?before=), null when none"}
            ),
        ),
        "Live": {
            **_obj(("at_ms", "centre", "timezone", "queues", "snapshot", "agents", "decisions", "counters")),
            "description": "what the supervisor dashboard shows (docs/web.md, Dashboard)",
        },
    }


# -------------------------------------------------------------------------------------------- paths


_ID = {"name": "id", "in": "path", "required": True, "schema": {**_S, "minLength": 1, "maxLength": 128}}


def _responses(ok: str, ok_schema: dict[str, Any] | None, *errors: int) -> dict[str, Any]:
    words = {
        400: "a malformed request (bad_request, bad_json, bad_field)",
        401: "no token, or one that is not valid",
        403: "the caller's role or agent may not do this (forbidden, not_your_contact, a missing CSRF token)",
        404: "no such thing (not_found)",
        405: "another method (the Allow header lists them)",
        409: "the centre refused it in its present state (conflict, refused, stale_offer, not_voice, channel_error)",
        413: f"a body over {MAX_BODY} bytes",
        503: "the centre is shutting down",
    }
    out: dict[str, Any] = {"200": {"description": ok}}
    if ok_schema is not None:
        out["200"]["content"] = {"application/json": {"schema": ok_schema}}
    for status in (401, 405, *errors):
        out[str(status)] = {
            "description": words[status],
            "content": {"application/json": {"schema": _ref("Error")}},
        }
    return out


def _op(
    op_id: str, summary: str, role: str, who: str, ok: dict[str, Any] | None, *errors: int, **more: Any
) -> dict[str, Any]:
    return {
        "operationId": op_id,
        "summary": summary,
        "description": f"Who: {who}.",
        "x-minimum-role": role,
        "responses": _responses(summary, ok, *errors),
        **more,
    }


def _body(schema: dict[str, Any], *, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _contact_actions() -> dict[str, Any]:
    paths = {}
    for action, (body, needs) in CONTACT_ACTIONS.items():
        empty = not body.__struct_fields__
        what = "an offer made to the agent" if needs == "offer" else "a contact the agent has"
        paths[f"/api/contacts/{{id}}/{action}"] = {
            "parameters": [_ID],
            "post": _op(
                f"contact_{action}",
                f"{action.replace('_', ' ')} (docs/protocol.md)",
                "agent",
                f"an agent on {what}; a supervisor on any contact, acting for the agent who has it",
                _ref("ActionResult"),
                400,
                403,
                404,
                409,
                413,
                requestBody=_body(_ref(body.__name__), required=False)
                if not empty
                else _body({"type": "object", "maxProperties": 0}, required=False),
            ),
        }
    return paths


def _paths() -> dict[str, Any]:
    agent_state_who = "the agent itself; a supervisor for any agent"
    case_who = (
        "supervisors; an agent while one of its contacts is offered to them or in their hands, or once they answered"
        " one (docs/web.md)"
    )
    return {
        "/api/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "this document",
                "description": "Who: anyone (no token needed).",
                "x-minimum-role": None,
                "security": [],
                "responses": {"200": {"description": "the OpenAPI document", "content": {"application/json": {}}}},
            }
        },
        "/api/me": {"get": _op("me", "the caller", "agent", "any user", _ref("Me"))},
        "/api/live": {
            "get": _op("live", "the dashboard's live figures", "supervisor", "supervisors and admins", _ref("Live"))
        },
        "/api/queues": {
            "get": _op("queues", "live figures per queue", "agent", "any user", _ref("Queues"), 403),
        },
        "/api/contacts": {
            "get": _op(
                "contacts",
                "live contacts, oldest first",
                "agent",
                "an agent sees its own contacts only (offered to it, connected, in wrap-up); supervisors see all",
                _ref("Contacts"),
                400,
                403,
                parameters=[
                    _query(
                        "state",
                        "only these states (comma-separated or repeated)",
                        {"type": "array", "items": {"enum": list(CONTACT_STATES)}},
                    )
                    | {"style": "form", "explode": False},
                    _query("queue", "only this queue", _S),
                    _query("channel", "only this channel", {"enum": list(CHANNELS)}),
                    _query("agent", "only this agent's (an agent may name only itself)", _S),
                    _query(
                        "limit",
                        f"at most this many (default {CONTACTS_LIMIT})",
                        {**_I, "minimum": 1, "maximum": CONTACTS_LIMIT_MAX},
                    ),
                ],
            )
        },
        **_contact_actions(),
        "/api/contacts/{id}/legs": {
            "parameters": [_ID],
            "get": _op(
                "contact_legs",
                "each agent's part in the contact, from the log",
                "agent",
                case_who,
                _ref("Legs"),
                403,
                404,
            ),
        },
        "/api/customers/{id}": {
            "parameters": [_ID],
            "get": _op(
                "customer",
                "screen-pop: the customer card, open cases, recent interactions (the read is audited)",
                "agent",
                "any user",
                _ref("ScreenPop"),
                400,
                404,
                parameters=[_query("limit", "recent interactions (default 10)", {**_I, "minimum": 1, "maximum": 100})],
            ),
        },
        "/api/cases/{id}": {
            "parameters": [_ID],
            "get": _op(
                "case",
                "the case, its interactions and a page of its transcript, long bodies cut (the read is audited)",
                "agent",
                case_who,
                _ref("Case"),
                400,
                403,
                404,
                parameters=[
                    _query("limit", "messages in the page (default: [server.transcripts] messages)", _POSITIVE),
                    _query("before", "a page's messages_before: the page of older messages", _S),
                ],
            ),
        },
        "/api/cases/{id}/messages/{message}": {
            "parameters": [
                _ID,
                {"name": "message", "in": "path", "required": True, "schema": {**_S, "pattern": "^[0-9]{1,18}$"}},
            ],
            "get": _op(
                "case_message",
                "one message of the case whole, e.g. one a page cut (the read is audited as the case's)",
                "agent",
                case_who,
                _ref("Message"),
                403,
                404,
            ),
        },
        "/api/agents/{id}/state": {
            "parameters": [_ID],
            "get": _op("agent_state", "the agent's state", "agent", agent_state_who, _ref("AgentState"), 403, 404),
            "post": _op(
                "set_agent_state",
                "make the agent available, away (with a reason) or logged out; answered once logged",
                "agent",
                agent_state_who,
                _ref("AgentState"),
                400,
                403,
                404,
                409,
                413,
                503,
                requestBody=_body(_ref("StateChange")),
            ),
        },
        "/api/agents/{id}/skills": {
            "parameters": [_ID],
            "post": _op(
                "set_agent_skills",
                "change the agent's skill levels and/or channel capacity",
                "supervisor",
                "supervisors and admins",
                _ref("AgentState"),
                400,
                403,
                404,
                409,
                413,
                503,
                requestBody=_body(_ref("SkillsChange")),
            ),
        },
    }


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST API."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "contactcentre REST API",
            "version": "1",
            "description": "Live queues and contacts, contact actions, screen-pop, cases and agents' state. "
            "Every answer is JSON; an error is an Error object with its HTTP status. Roles are ordered "
            "agent < supervisor < admin; x-minimum-role is the least an operation needs, its description "
            "says whose data it may touch. docs/api.md has the overview.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "servers": [{"url": "http://127.0.0.1:8080", "description": "`contactcentre serve` (its [server] port)"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `contactcentre user add` or `user token`: 'cc_' and 43 URL-safe "
                    "base64 characters",
                },
                "session": {
                    "type": "apiKey",
                    "in": "cookie",
                    "name": "cc_session",
                    "description": "a logged-in browser's session (docs/web.md); POSTs also need the "
                    "X-CSRF-Token header and an Origin of the site",
                },
            },
            "schemas": _schemas(),
        },
    }


def document_json() -> bytes:
    """The document as served and as kept in docs/openapi.json: indented, keys in document order."""
    return (json.dumps(document(), indent=1, ensure_ascii=False) + "\n").encode()


def route_table() -> str:
    """The operations as a Markdown table (docs/api.md holds it between its ``routes`` markers)."""
    rows = ["| method | path | least role | who | body | answer |", "|---|---|---|---|---|---|"]
    for path, item in document()["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            ok = op["responses"]["200"].get("content", {}).get("application/json", {}).get("schema", {})
            answer = ok.get("$ref", "").rsplit("/", 1)[-1] or "JSON"
            who = op["description"].removeprefix("Who: ").rstrip(".")
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            sent = body.get("$ref", "").rsplit("/", 1)[-1] or ("`{}` or none" if body else "–")
            role = op["x-minimum-role"] or "none"
            rows.append(f"| {method.upper()} | `{path}` | {role} | {who} | {sent} | {answer} |")
    return "\n".join(rows) + "\n"


class OpenApiDocument(Resource):
    """``GET /api/openapi.json`` for anyone."""

    isLeaf = True

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return document_json()


if __name__ == "__main__":
    sys.stdout.buffer.write(document_json())
