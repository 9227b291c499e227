"""Store work an adapter stages with its events (``Centre.stage``), as data.

Rows that must be committed with an event (the customer and case a chat's hello makes, the audit records of a
screen-pop, an e-mail's case touched) go through the store writer's transaction. An adapter describes that
work as one of the ``StoreOp`` structs below — plain fields, one tagged union like the events — and the
writer runs it by calling it with its connection; each op's ``__call__`` runs a named store function. Being
data, an op can be encoded on an edge node and run by the router's writer in another process
(``encode_op``/``decode_op``), which a ``functools.partial`` over a function could not.

Two ops give something back in the process that staged them, and only there: ``HelloRows.token`` (the case
token chosen in the transaction) and ``ReadRecords`` (reads added until its commit ride with it). An op run by
another process leaves its caller's copy as it was: the chat reads the token back from the store, and a
``ReadRecords`` encoded for the wire takes no more reads (``sealed``), so later ones start a new batch.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, ClassVar

import msgspec

from contactcentre.store.cases import status_from_disposition
from contactcentre.store.chats import write_hello_rows
from contactcentre.store.mail import case_touched, first_response
from contactcentre.store.privacy import record_reads

if TYPE_CHECKING:
    from sqlalchemy import Connection


class StoreOp(msgspec.Struct, tag_field="op", omit_defaults=True):
    """Base of the store ops: ``op(connection)`` runs it in the writer's transaction."""

    # Rows that are not events and need no event's transaction: an edge node writes them itself, in a
    # transaction of its own just before it hands the record over (server/edge_centre.py); in one process they
    # stay in the writer's commit.
    AT_EDGE: ClassVar[bool] = False
    # It reads and writes no row the commit's events write (the audit of reads): the writer may run it after
    # them, so it does not split their run (each run of events is projected with statements of its own).
    ANY_ORDER: ClassVar[bool] = False

    def __call__(self, conn: Connection) -> None:
        raise NotImplementedError(type(self).__name__)  # every op below defines it

    def sealed(self) -> StoreOp:
        """What goes on the wire: the op as it stands now (an op that gathers returns a copy it stops
        gathering into)."""
        return self


class HelloRows(StoreOp, tag="chat.hello_rows"):
    """A chat hello's new customer (when ``new_customer``) and case, written just before its arrival
    (``store.chats.write_hello_rows``). ``token`` is the case token the transaction chose: set when the op
    ran in this process, None if it failed there (logged by the writer) or ran in another process."""

    now_ms: int
    customer_id: str
    new_customer: bool
    name: str | None
    email: str | None
    visitor: str
    case_id: str
    topic: str | None
    queue: str | None
    token: str | None = None
    AT_EDGE: ClassVar[bool] = True  # a customer and a case: an edge writes them before the arrival leaves

    def __call__(self, conn: Connection) -> None:
        # The writer may run a batch twice (a retry after a failed unit): the token is this run's.
        self.token = None
        self.token = write_hello_rows(
            conn,
            now_ms=self.now_ms,
            customer_id=self.customer_id,
            new_customer=self.new_customer,
            name=self.name,
            email=self.email,
            visitor=self.visitor,
            case_id=self.case_id,
            topic=self.topic,
            queue=self.queue,
        )


class ReadRecords(StoreOp, tag="audit.reads"):
    """Reads of customers' data, ``(customer_id, at_ms, actor, what)``, gathered until the commit that writes
    them in one statement (``store.privacy.record_reads``).

    It gathers: the adapter stages one and ``add``s reads to it until the writer has run it (or, on an edge,
    until it was sealed for the wire); ``add`` then says False and the adapter starts a new one. A commit the
    writer runs again (a retry) writes the same rows again."""

    ANY_ORDER: ClassVar[bool] = True  # audit rows: read by nobody in the commit

    reads: list[tuple[str, int, str, str]] = msgspec.field(default_factory=list)
    written: bool = False  # run by the writer or sealed: it takes no more reads
    _lock: ClassVar[threading.Lock] = threading.Lock()  # ``add`` runs on the loop, the write on the writer's thread

    def add(self, customer_id: str, now_ms: int, *, actor: str, what: str) -> bool:
        """Gather one read; False (nothing gathered) once this batch has been written or sealed."""
        with self._lock:
            if self.written:
                return False
            self.reads.append((customer_id, now_ms, actor, what))
            return True

    def __call__(self, conn: Connection) -> None:
        with self._lock:
            self.written = True
            reads = list(self.reads)
        record_reads(conn, reads)

    def sealed(self) -> ReadRecords:
        with self._lock:
            self.written = True
            return ReadRecords(list(self.reads))

    def __repr__(self) -> str:  # what a failed write logs: ids, never what was shown
        return f"ReadRecords({[(r[0], r[2]) for r in self.reads]!r})"


class CaseTouched(StoreOp, tag="mail.case_touched"):
    """A mail came in on a case: re-opened if pending or solved, its first-response due time set if it had
    none (``store.mail.case_touched``)."""

    case_id: str
    now_ms: int
    due_ms: int | None = None

    def __call__(self, conn: Connection) -> None:
        case_touched(self.case_id, self.now_ms, self.due_ms, conn)


class FirstResponse(StoreOp, tag="mail.first_response"):
    """An agent's first reply on a case (``store.mail.first_response``)."""

    case_id: str
    now_ms: int

    def __call__(self, conn: Connection) -> None:
        first_response(self.case_id, self.now_ms, conn)


class CaseStatusFromDisposition(StoreOp, tag="case.status_from_disposition"):
    """A wrap-up's disposition moves its case (``store.cases.status_from_disposition``)."""

    interaction_id: str
    status: str
    now_ms: int

    def __call__(self, conn: Connection) -> None:
        status_from_disposition(conn, interaction_id=self.interaction_id, status=self.status, now_ms=self.now_ms)


STORE_OP_TYPES: tuple[type[StoreOp], ...] = (
    HelloRows,
    ReadRecords,
    CaseTouched,
    FirstResponse,
    CaseStatusFromDisposition,
)
AnyStoreOp = HelloRows | ReadRecords | CaseTouched | FirstResponse | CaseStatusFromDisposition  # the tagged union

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(AnyStoreOp)


def encode_op(op: StoreOp) -> bytes:
    """The op as JSON for another process; an op that gathers is sealed first (``StoreOp.sealed``)."""
    return _encoder.encode(op.sealed())


def decode_op(data: bytes | str) -> StoreOp:
    return _decoder.decode(data)


__all__ = [
    "STORE_OP_TYPES",
    "AnyStoreOp",
    "CaseStatusFromDisposition",
    "CaseTouched",
    "FirstResponse",
    "HelloRows",
    "ReadRecords",
    "StoreOp",
    "decode_op",
    "encode_op",
]
