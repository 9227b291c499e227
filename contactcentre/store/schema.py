"""The case store's tables (SQLAlchemy 2 Core), one ``MetaData`` shared by the store and the migrations.

Times are integer epoch milliseconds, like every event, so that a row and the events that made it compare
without conversions and SQLite and PostgreSQL store the same numbers. Identifiers are text: customer ids may
come from a CRM import, interaction ids are the router's contact ids, case ids are minted here.

The migrations in ``contactcentre/store/migrations`` create exactly this schema; a test compares the two on
SQLite and PostgreSQL, so a column added here without a migration fails CI.

Personal data lives only in the columns listed in ``PERSONAL_COLUMNS`` (and in event payloads and message
bodies, which erasure rewrites); keep that list true when adding a column.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Named constraints, so that migrations can refer to them identically on every database.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)

# 64-bit row ids on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the (already 64-bit) rowid.
RowId = BigInteger().with_variant(Integer(), "sqlite")

IDENTITY_KINDS = ("phone", "email", "chat")
CASE_STATUSES = ("new", "open", "pending", "solved", "closed")
OPEN_CASE_STATUSES = ("new", "open", "pending")
ROLES = ("agent", "supervisor", "admin")

customers = Table(
    "customers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=True),
    Column("name_key", String(200), nullable=True),  # folded name, for duplicate detection
    Column("tier", String(32), nullable=True),
    Column("lifetime_value", Float, nullable=True),  # CLV in the centre's currency
    Column("value_segment", String(32), nullable=True),
    Column("account_manager_id", String(128), nullable=True),
    Column("language", String(16), nullable=True),
    Column("consent_email", Boolean, nullable=False, default=False),
    Column("consent_sms", Boolean, nullable=False, default=False),
    Column("consent_calls", Boolean, nullable=False, default=False),
    Column("do_not_call", Boolean, nullable=False, default=False),
    Column("notes", Text, nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    # A merged-away customer keeps its row as a pointer, so old references (a CRM link, an agent's
    # bookmark) still lead to the survivor.
    Column("merged_into", String(64), nullable=True),
    Column("erased_ms", BigInteger, nullable=True),
    Index(None, "name_key"),
    Index(None, "merged_into"),  # erasure and export find the customers merged into one
)

identities = Table(
    "identities",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("customer_id", String(64), ForeignKey("customers.id"), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("value", String(320), nullable=False),  # normalised: E.164, lower-case address, token as given
    Column("verified", Boolean, nullable=False, default=False),
    Column("created_ms", BigInteger, nullable=False),
    CheckConstraint("kind IN ('phone', 'email', 'chat')", name="kind"),
    UniqueConstraint("kind", "value"),
    Index(None, "customer_id"),
)

cases = Table(
    "cases",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("token", String(32), nullable=False),  # "[#C-1A2B3C]" in e-mail subjects
    Column("customer_id", String(64), ForeignKey("customers.id"), nullable=True),
    Column("subject", Text, nullable=True),
    Column("category", String(64), nullable=True),  # e.g. complaint, billing, technical
    Column("status", String(16), nullable=False, default="new"),
    Column("priority", Integer, nullable=False, default=0),
    Column("queue", String(128), nullable=True),
    Column("owner_id", String(128), nullable=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("first_response_due_ms", BigInteger, nullable=True),
    Column("first_response_ms", BigInteger, nullable=True),
    Column("resolution_due_ms", BigInteger, nullable=True),
    Column("closed_ms", BigInteger, nullable=True),
    CheckConstraint("status IN ('new', 'open', 'pending', 'solved', 'closed')", name="status"),
    UniqueConstraint("token"),
    Index(None, "customer_id", "status"),
)

interactions = Table(
    "interactions",
    metadata,
    Column("id", String(128), primary_key=True),  # the router's contact id
    # No foreign keys: the log must take what the edge reports (a customer id from a CRM not yet imported)
    # rather than refuse it; screen-pop and merge join by these ids.
    Column("case_id", String(64), nullable=True),
    Column("customer_id", String(64), nullable=True),
    Column("channel", String(16), nullable=False),
    Column("direction", String(8), nullable=False, default="inbound"),
    Column("address", String(320), nullable=True),  # the identity the customer used (ANI, address, token)
    Column("subject", Text, nullable=True),
    Column("queue", String(128), nullable=True),
    Column("tier", String(32), nullable=True),
    Column("agent_id", String(128), nullable=True),
    Column("started_ms", BigInteger, nullable=False),
    Column("answered_ms", BigInteger, nullable=True),
    Column("ended_ms", BigInteger, nullable=True),
    Column("wait_ms", BigInteger, nullable=True),
    Column("talk_ms", BigInteger, nullable=True),
    Column("hold_ms", BigInteger, nullable=True),
    Column("wrap_ms", BigInteger, nullable=True),
    Column("handle_ms", BigInteger, nullable=True),
    Column("disposition", String(64), nullable=True),
    # handled, abandoned, failed, overflowed, transferred; NULL while the interaction is live
    Column("outcome", String(16), nullable=True),
    CheckConstraint("direction IN ('inbound', 'outbound')", name="direction"),
    # The screen-pop path: a customer's latest interactions, newest first, from the index alone.
    Index(None, "customer_id", "started_ms"),
    Index(None, "case_id"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("case_id", String(64), nullable=True),
    Column("interaction_id", String(128), nullable=True),
    Column("channel", String(16), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("author", String(320), nullable=True),  # sender address, agent id or visitor name
    Column("at_ms", BigInteger, nullable=False),
    Column("message_id", String(998), nullable=True),  # RFC 5322 Message-ID, angle brackets stripped
    Column("in_reply_to", String(998), nullable=True),
    Column("references", Text, nullable=True),  # space-separated Message-IDs
    Column("subject", Text, nullable=True),
    Column("body", Text, nullable=False, default=""),
    Column("recipient", String(320), nullable=True),  # outbound: the address it went to
    # outbound e-mail: queued → sent, or failed after its attempts; NULL for chat lines and inbound mail
    Column("delivery", String(16), nullable=True),
    Column("attempts", Integer, nullable=False, default=0, server_default="0"),
    CheckConstraint("direction IN ('inbound', 'outbound')", name="direction"),
    Index(None, "message_id"),
    Index(None, "case_id", "at_ms"),
    Index(None, "interaction_id"),
    Index(None, "delivery"),
    Index(None, "recipient", "at_ms"),  # the e-mail channel's once-a-period acknowledgement per sender
)

events = Table(
    "events",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("type", String(64), nullable=False),
    Column("contact_id", String(128), nullable=True),
    Column("agent_id", String(128), nullable=True),
    Column("payload", Text, nullable=False),
    Index(None, "contact_id"),
    Index(None, "agent_id"),
)

users = Table(
    "users",
    metadata,
    Column("id", String(128), primary_key=True),  # the login name
    Column("display_name", Text, nullable=True),
    Column("role", String(16), nullable=False),
    Column("agent_id", String(128), nullable=True),  # the router's agent id, for agents
    Column("password_hash", Text, nullable=True),
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_ms", BigInteger, nullable=False),
    # RFC 6238 second factor: the shared secret (base32; the server must read it to check a code, so it
    # cannot be hashed) and the last 30-second step a code was accepted for, so that a code is used once.
    Column("totp_secret", String(64), nullable=True),
    Column("totp_last_step", BigInteger, nullable=True),
    CheckConstraint("role IN ('agent', 'supervisor', 'admin')", name="role"),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("user_id", String(128), ForeignKey("users.id"), nullable=False),
    Column("token_hash", String(64), nullable=False),  # sha256 hex: tokens are random, a KDF adds nothing
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked_ms", BigInteger, nullable=True),
    UniqueConstraint("token_hash"),
    Index(None, "user_id"),
)

web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("session_hash", String(64), nullable=False),  # sha256 hex of the cookie's 256-bit random id
    Column("user_id", String(128), ForeignKey("users.id"), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),  # idle expiry counts from here
    Column("expires_ms", BigInteger, nullable=False),  # absolute expiry
    Column("revoked_ms", BigInteger, nullable=True),  # logout, rotation, or an administrator
    Column("address", String(64), nullable=True),  # where the login came from
    UniqueConstraint("session_hash"),
    Index(None, "user_id"),
    Index(None, "expires_ms"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", RowId, primary_key=True, autoincrement=True),
    Column("at_ms", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),  # a user id, or "system"
    Column("action", String(64), nullable=False),  # customer.read, customer.merge, customer.erase, ...
    Column("customer_id", String(64), nullable=True),
    Column("detail", Text, nullable=True),  # JSON
    Index(None, "customer_id", "at_ms"),
    Index(None, "at_ms"),
)

# The active router's fencing token (issue 18): one row, the token of the router allowed to write. A router
# that takes over stores a greater token here; a writer built with an older one finds it gone in its next
# commit transaction and stops (``contactcentre.store.fence``).
router_fence = Table(
    "router_fence",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("token", BigInteger, nullable=False),
    Column("holder", String(128), nullable=False),  # the node id that took the token
    Column("since_ms", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="one_row"),
)

# The routers' inputs applied so far, one row each, written in the same transaction as their events: an input
# retried across a fail-over is recognised as applied (``fence.applied_inputs``) instead of applied twice.
router_inputs = Table(
    "router_inputs",
    metadata,
    Column("input_id", String(200), primary_key=True),  # "<node-id>:<boot>:<n>", unique forever
    Column("last_event_id", BigInteger, nullable=False),  # the events.id of the input's last event
    Column("at_ms", BigInteger, nullable=False),
)

# Text columns that can hold personal data, by table. Erasure clears or rewrites exactly these (plus
# event payloads); the erasure test scans every text column of every table, so a forgotten one fails.
PERSONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("name", "name_key", "notes", "account_manager_id", "language"),
    "identities": ("value",),
    "cases": ("subject",),
    "interactions": ("address", "subject"),
    "messages": ("author", "message_id", "in_reply_to", "references", "subject", "body", "recipient"),
    "events": ("payload",),
}
