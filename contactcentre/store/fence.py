"""The store's side of one centre run by several processes: the fencing token, the routers' applied inputs,
and the event log read by id.

Only one router may write the centre's log at a time. The lease in Redis says who should; the **fence** here
makes sure no other one can: a router that takes over stores a token greater than any before
(``take_fence``), and the store writer of a router checks, as the first statement of every commit
transaction, that the row still holds its own token (``check_fence``). A paused or partitioned old leader
that wakes up finds a greater token and its commit fails with ``Fenced``, in the same transaction as the
writes it would have made, so nothing of it is ever stored after its successor took over.

Why an UPDATE and not a SELECT: ``check_fence`` updates the row to itself, which takes the row's lock until
the commit. On PostgreSQL a ``take_fence`` that comes while an old leader's commit is open waits for it (that
commit came first and stays), and an old leader's check that comes while ``take_fence`` is open waits for it
and then reads the new token (READ COMMITTED re-checks the WHERE against the committed row) and fails. SQLite
serialises writers (``BEGIN IMMEDIATE``), which gives the same order.

An old leader that stops (a pause, a partition) in the middle of a commit keeps that row lock for as long as
its connection lives, which can be hours. So on PostgreSQL ``take_fence`` waits for the row at most
``stale_after_ms``, then ends the sessions holding it (``pg_terminate_backend``: their transactions roll back,
nothing of them is stored) and takes it. (The server's idle-in-transaction timeout would be the gentler tool,
but the server does not arm it after psycopg's pipelined ``executemany``, which every commit uses.)

``router_inputs`` keeps one row per input the active router applied, written in the transaction of its
events, so that a new leader recognises the inputs its predecessor applied but did not acknowledge
(``applied_inputs``) and does not apply them twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from sqlalchemy import Connection, bindparam, delete, func, insert, select, text, update
from sqlalchemy.exc import OperationalError

from contactcentre.store.db import DatabaseError, insert_many_unless_taken, insert_unless_taken
from contactcentre.store.schema import events, router_fence, router_inputs

log = logging.getLogger(__name__)

FENCE_ROW = 1
LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a lock_timeout that ran out
_IN_CHUNK = 500  # ids per IN (...) look-up: far below either database's limit on bound parameters


class Fenced(DatabaseError):
    """The store holds a fencing token other than the writer's: another router took over (or none ever took
    the fence). ``token`` is the one offered, ``current`` and ``holder`` what the store holds (None: no row)."""

    def __init__(self, token: int, current: int | None, holder: str | None) -> None:
        self.token = token
        self.current = current
        self.holder = holder
        if current is None:
            what = "no router has taken the fence"
        else:
            what = f"router {holder!r} holds fencing token {current}"
        super().__init__(f"fenced: this router's token is {token}, but {what}; it must not write")


# Built once: their values come as parameters.
_TAKE = (
    update(router_fence)
    .where(router_fence.c.id == FENCE_ROW, router_fence.c.token < bindparam("new_token"))
    .values(token=bindparam("new_token"), holder=bindparam("new_holder"), since_ms=bindparam("new_since_ms"))
)
# SET token = token: a no-op write, for its row lock (see the module's doc) and its row count.
_CHECK = (
    update(router_fence)
    .where(router_fence.c.id == FENCE_ROW, router_fence.c.token == bindparam("held"))
    .values(token=router_fence.c.token)
)
_HOLDER = select(router_fence.c.token, router_fence.c.holder, router_fence.c.since_ms).where(
    router_fence.c.id == FENCE_ROW
)
_LOCK_ROW = select(router_fence.c.id).where(router_fence.c.id == FENCE_ROW).with_for_update()
# The other sessions that wrote the fence's row in a transaction still open (a commit's check holds
# RowExclusiveLock on the table until it ends; a takeover waiting beside us holds only RowShareLock).
_END_HOLDERS = text(
    "SELECT pid, pg_terminate_backend(pid) FROM pg_locks"
    " WHERE relation = CAST('router_fence' AS regclass) AND mode = 'RowExclusiveLock' AND granted"
    " AND pid <> pg_backend_pid()"
)
_RECORD_INPUT = insert(router_inputs)  # a second mark of one input is a bug: it raises (see record_inputs)
_LAST_EVENT_ID = select(func.coalesce(func.max(events.c.id), 0))


def fence_holder(conn: Connection) -> tuple[int, str, int] | None:
    """``(token, holder, since_ms)`` of the fence, or None before any router took it."""
    row = conn.execute(_HOLDER).first()
    return None if row is None else (row.token, row.holder, row.since_ms)


def _fenced(conn: Connection, token: int) -> Fenced:
    held = fence_holder(conn)
    return Fenced(token, None, None) if held is None else Fenced(token, held[0], held[1])


def take_fence(conn: Connection, token: int, holder: str, now_ms: int, *, stale_after_ms: int = 1_000) -> None:
    """Store ``token`` as the fence, held by node ``holder`` since ``now_ms``, if it is greater than the stored
    one (the first call inserts the row); otherwise raise ``Fenced``. Commit the caller's transaction promptly:
    until then every writer's commit waits on the row. On PostgreSQL, sessions that hold the row longer than
    ``stale_after_ms`` (an old leader stalled inside a commit) are ended (see the module's doc)."""
    if conn.dialect.name == "postgresql":
        _lock_row_ending_stale_holders(conn, stale_after_ms)
    values = {"new_token": token, "new_holder": holder, "new_since_ms": now_ms}
    if conn.execute(_TAKE, values).rowcount == 1:
        return
    if insert_unless_taken(
        conn, router_fence, ["id"], {"id": FENCE_ROW, "token": token, "holder": holder, "since_ms": now_ms}
    ):
        return
    # A rival inserted the first row between our UPDATE and INSERT: compare with its token.
    if conn.execute(_TAKE, values).rowcount == 1:
        return
    raise _fenced(conn, token)


def _lock_row_ending_stale_holders(conn: Connection, stale_after_ms: int) -> None:
    before = conn.execute(text("SELECT current_setting('lock_timeout')")).scalar_one()
    for _ in range(3):  # a terminated session's locks go within moments; a new holder each time is not likely
        try:
            with conn.begin_nested():  # a lock_timeout error rolls back to here, not the caller's transaction
                conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": f"{int(stale_after_ms)}ms"})
                conn.execute(_LOCK_ROW)
            break
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != LOCK_NOT_AVAILABLE:
                raise
        ended = [row.pid for row in conn.execute(_END_HOLDERS)]
        log.warning("fence: the row was held over %d ms; ended sessions %s", stale_after_ms, ended)
    else:
        conn.execute(_LOCK_ROW)  # still held: wait for it like any writer
    conn.execute(text("SELECT set_config('lock_timeout', :before, true)"), {"before": before})


def release_fence(conn: Connection, token: int) -> None:
    """Remove the fence if it still holds ``token``: a router that took it and found the store held by a
    single-process server gives the store back (that server refuses a store with a fence)."""
    conn.execute(delete(router_fence).where(router_fence.c.id == FENCE_ROW, router_fence.c.token == token))


def check_fence(conn: Connection, token: int) -> None:
    """Raise ``Fenced`` unless the fence still holds ``token``; keeps the row locked until the caller's
    transaction ends. Run it first in every transaction of a fenced writer."""
    if conn.execute(_CHECK, {"held": token}).rowcount != 1:
        raise _fenced(conn, token)


def record_input(conn: Connection, input_id: str, last_event_id: int, at_ms: int) -> None:
    """Note that input ``input_id`` was applied, its last event being ``last_event_id``. A second record of the
    same input raises (it would mean the input was applied twice)."""
    conn.execute(_RECORD_INPUT, [{"input_id": input_id, "last_event_id": last_event_id, "at_ms": at_ms}])


def record_inputs(conn: Connection, rows: list[tuple[str, int, int]]) -> None:
    """``record_input`` for many ``(input_id, last_event_id, at_ms)``, in one statement; a mark already there
    is left as it is (a commit whose outcome was lost and which held marks only is written again: the writer
    cannot tell it went through). The router never applies an input twice: it looks marks up first."""
    marks = [{"input_id": i, "last_event_id": e, "at_ms": t} for i, e, t in rows]
    insert_many_unless_taken(conn, router_inputs, ["input_id"], marks)


def applied_inputs(conn: Connection, ids: Iterable[str]) -> set[str]:
    """Those of ``ids`` that were applied (recorded by ``record_input``)."""
    wanted = list(dict.fromkeys(ids))
    found: set[str] = set()
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        found.update(
            conn.execute(select(router_inputs.c.input_id).where(router_inputs.c.input_id.in_(chunk))).scalars()
        )
    return found


def inputs_logged_between(conn: Connection, after_id: int, upto_id: int) -> list[str]:
    """Ids of the applied inputs whose last event has an id in ``after_id < id <= upto_id``: what an edge that
    read those events from the store (a gap in the output stream) may answer as durable. A scan of
    ``router_inputs``, which has no index on ``last_event_id``: gaps are rare (a router died between its commit
    and its publish, Redis lost its data, a reader fell behind the trim)."""
    q = select(router_inputs.c.input_id).where(
        router_inputs.c.last_event_id > after_id, router_inputs.c.last_event_id <= upto_id
    )
    return list(conn.execute(q).scalars())


def events_after(conn: Connection, after_id: int, upto_id: int | None = None) -> list[tuple[int, str]]:
    """``(id, payload)`` of the logged events with ``after_id < id <= upto_id`` (no upper bound: None), in log
    order. Payloads are the stored JSON text (``contactcentre.events.decode`` reads them)."""
    q = select(events.c.id, events.c.payload).where(events.c.id > after_id)
    if upto_id is not None:
        q = q.where(events.c.id <= upto_id)
    return [(row.id, row.payload) for row in conn.execute(q.order_by(events.c.id))]


def last_event_id(conn: Connection) -> int:
    """The id of the newest logged event (0: the log is empty)."""
    return int(conn.execute(_LAST_EVENT_ID).scalar_one())
