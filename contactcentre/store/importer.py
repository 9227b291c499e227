"""Importing customers from a CSV file (a CRM export, a spreadsheet) with a validation report.

The whole file is read and every row validated before anything is written, so a file that cannot be read
to its end imports nothing, and a dry run is the same validation without the writing. A row with any error
is skipped as a whole; the report names it the way a spreadsheet user sees it (the header is row 1) with the
column and the reason. Bad input never raises: whatever is wrong with the file ends up in the report. Text
is never patched: a row holding bytes that are not UTF-8 is such a row (``_decode``, ``_bad_text``).

A row whose ``id`` is an existing customer updates that customer (cells left empty keep what is stored) and
adds its new identities; any other row creates a customer. An identity that already belongs to someone else
is an error, never a silent re-assignment: which of the two is right is for a person to decide (see
``contactcentre.store.dedupe``).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from contactcentre.store.customers import (
    IdentityTaken,
    UnknownCustomer,
    add_identity,
    create_customer,
    surviving_id,
    update_customer,
)
from contactcentre.store.identity import DEFAULT_REGION, IdentityError, normalise
from contactcentre.store.schema import audit_log, customers, identities

COLUMNS = (
    "id",
    "name",
    "phone",
    "email",
    "chat_token",
    "tier",
    "lifetime_value",
    "value_segment",
    "account_manager",
    "language",
    "consent_email",
    "consent_sms",
    "consent_calls",
    "do_not_call",
    "notes",
)
# Header spellings CRM exports and spreadsheets commonly use for the same columns.
ALIASES = {
    "customer_id": "id",
    "e_mail": "email",
    "mail": "email",
    "emails": "email",
    "phones": "phone",
    "telephone": "phone",
    "phone_number": "phone",
    "account_manager_id": "account_manager",
    "chat": "chat_token",
}
IDENTITY_COLUMNS = {"phone": "phone", "email": "email", "chat_token": "chat"}  # column -> identity kind
BOOLEAN_COLUMNS = ("consent_email", "consent_sms", "consent_calls", "do_not_call")
# Column -> (customers column, longest value the column holds on PostgreSQL).
TEXT_COLUMNS = {
    "tier": ("tier", 32),
    "value_segment": ("value_segment", 32),
    "account_manager": ("account_manager_id", 128),
    "language": ("language", 16),
}
MAX_ID = 64
TRUE = frozenset({"yes", "y", "true", "1", "ja"})
FALSE = frozenset({"no", "n", "false", "0", "nee"})
DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab"}
FILE = 0  # the row number of errors about the file as a whole


@dataclass
class ImportReport:
    """What an import did (or, for a dry run, would do). ``errors`` are ``(row, column, message)`` with the
    header as row 1, row 0 for the file as a whole (the message then reads on from "the file") and column ""
    for the row as a whole."""

    source: str
    dry_run: bool = False
    rows_read: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def error(self, row: int, column: str, message: str) -> None:
        self.errors.append((row, column, message))

    def text(self) -> str:
        would = "would be " if self.dry_run else ""
        lines = [
            f"{self.source}: {self.rows_read} rows read; {self.created} {would}created, {self.updated} {would}updated,"
            f" {self.skipped} skipped"
        ]
        if self.dry_run:
            lines.append("Dry run: nothing was written.")
        if self.errors:
            lines.append(f"{len(self.errors)} error{'s' if len(self.errors) != 1 else ''}:")
            for row, column, message in sorted(self.errors, key=lambda e: e[0]):
                if row == FILE:
                    lines.append(f"  the file {message}")
                else:
                    lines.append(f"  row {row}, {column}: {message}" if column else f"  row {row}: {message}")
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning{'s' if len(self.warnings) != 1 else ''}:")
            lines.extend(f"  {w}" for w in self.warnings)
        return "\n".join(lines)


@dataclass
class _Row:
    number: int
    customer_id: str | None
    exists: bool
    fields: dict[str, Any]
    identities: list[tuple[str, str]]  # (kind, normalised value)


def _column_letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _header_name(cell: str) -> str:
    name = re.sub(r"[\s\-]+", "_", cell.strip().lstrip("\ufeff").lower())
    return ALIASES.get(name, name)


def _read_text(source: TextIO | str | os.PathLike[str], report: ImportReport) -> str | None:
    try:
        if isinstance(source, str | os.PathLike):
            with open(source, "rb") as f:
                data: str | bytes = f.read()
        else:
            data = source.read()
    except UnicodeDecodeError as exc:  # a text stream opened with the wrong encoding
        report.error(FILE, "", f"cannot be read as text ({exc.reason} at byte {exc.start}); save it as CSV UTF-8")
        return None
    except OSError as exc:
        report.error(FILE, "", f"cannot be read: {exc.strerror or exc}")
        return None
    if isinstance(data, bytes):
        if b"\x00" in data:  # before decoding, so that a binary file is not first "read as Windows-1252"
            report.error(FILE, "", "contains NUL bytes: it is not a CSV text file (a spreadsheet? export it as CSV)")
            return None
        decoded = _decode(data, report)
        if decoded is None:
            return None
        data = decoded
    text = data.removeprefix("\ufeff")
    if "\x00" in text:
        report.error(FILE, "", "contains NUL bytes: it is not a CSV text file (a spreadsheet? export it as CSV)")
        return None
    if not text.strip():
        report.error(FILE, "", "is empty")
        return None
    return text


def _decode(data: bytes, report: ImportReport) -> str | None:
    """The file's text. UTF-8 as far as it is valid: bytes that are not stay in the text as surrogate escapes,
    so that the rows holding them are reported and skipped (``_bad_text``) instead of being patched with
    U+FFFD or guessed. A file with no valid non-ASCII UTF-8 at all but bytes that are not UTF-8 is a legacy
    8-bit export: Excel's plain "CSV" on Windows is Windows-1252."""
    text = data.decode("utf-8-sig", "surrogateescape")
    if text.isascii() or not _INVALID.search(text) or _VALID_NON_ASCII.search(text):
        return text
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:  # bytes undefined in Windows-1252 too: not text at all
        report.error(FILE, "", "is not text in UTF-8 or Windows-1252: is it a CSV file?")
        return None
    report.warnings.append("the file is not UTF-8; it was read as Windows-1252 (Excel's 'CSV')")
    return text


# Lone surrogates: the escapes of bytes that are not UTF-8, or (from a stream) text that is not Unicode.
_INVALID = re.compile("[\ud800-\udfff]")
_VALID_NON_ASCII = re.compile("[^\x00-\x7f\ud800-\udfff]")


def _bad_text(value: str) -> str | None:
    """Why a cell's text cannot be stored as it is, or None when it can."""
    found = _INVALID.search(value)
    if found is not None:
        char = ord(found.group())
        if 0xDC80 <= char <= 0xDCFF:  # a surrogate escape: the byte that was not UTF-8
            byte = char - 0xDC00
            return f"not valid UTF-8 (byte 0x{byte:02X} at character {found.start() + 1}; save the file as CSV UTF-8)"
        return f"not valid Unicode (U+{char:04X} at character {found.start() + 1})"
    if "\ufffd" in value:
        # U+FFFD is what a decoder puts where text was lost: importing it would store the loss silently.
        return "contains U+FFFD, the mark of text lost in an earlier decoding (fix the source and export again)"
    return None


def _records(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """``(spreadsheet row number, cells)``; a blank line is a row too, as it is in a spreadsheet."""
    return enumerate(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), start=1)


def _first_row(text: str, delimiter: str) -> tuple[int, list[str]] | None:
    try:
        return next(((n, cells) for n, cells in _records(text, delimiter) if any(c.strip() for c in cells)), None)
    except csv.Error:
        return None


def _sniff(text: str) -> tuple[str, int, list[str]] | None:
    """The delimiter under which the first non-blank row names the most known columns, with that row's number
    and cells. ``csv.Sniffer`` guesses from character frequencies and misreads a file of names with commas in
    a ``;`` file; the header is the one row whose content is known."""
    best: tuple[tuple[int, int], str, int, list[str]] | None = None
    for rank, delimiter in enumerate(DELIMITERS):
        first = _first_row(text, delimiter)
        if first is None:
            continue
        known = len({_header_name(c) for c in first[1]} & set(COLUMNS))
        if known and (best is None or (known, -rank) > best[0]):
            best = ((known, -rank), delimiter, *first)
    return None if best is None else best[1:]


def _parse_bool(text: str) -> bool:
    low = text.lower()
    if low in TRUE:
        return True
    if low in FALSE:
        return False
    raise ValueError(f"{text!r} is not yes/no (yes, no, true, false, 1, 0 or empty)")


def _parse_number(text: str) -> float:
    """A number written the English (1,234.50) or the Dutch (1.234,50) way; "1,234" and "1.234" are refused
    as ambiguous rather than guessed."""
    s = re.sub(r"[\s\u00a0']", "", text)
    if re.fullmatch(r"[-+]?[1-9]\d{0,2}[.,]\d{3}", s):
        raise ValueError(f"{text!r} is ambiguous (a thousands separator or a decimal point?): write 1234 or 1234.00")
    if "," in s and "." in s:
        thousands, decimal = (".", ",") if s.rfind(",") > s.rfind(".") else (",", ".")
        s = s.replace(thousands, "").replace(decimal, ".")
    elif re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+", s):
        s = s.replace(",", "")
    else:
        s = s.replace(",", ".")
    if not re.fullmatch(r"[-+]?(\d+(\.\d*)?|\.\d+)", s):
        raise ValueError(f"{text!r} is not a number")
    value = float(s)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is too large")
    return value


_Report = Callable[[str, str], None]  # (column, message) of the row being checked


class _Validator:
    """Checks rows one by one, remembering ids and identities seen earlier in the file."""

    def __init__(self, conn: Connection, report: ImportReport, region: str | None, order: dict[str, int]) -> None:
        self.conn, self.report, self.region = conn, report, region
        self.order = order  # column -> its position in the file, so that a row's errors read left to right
        self.ids: dict[str, int] = {}
        self.identities: dict[tuple[str, str], int] = {}

    def row(self, number: int, cells: dict[str, str]) -> _Row | None:
        problems: list[tuple[str, str]] = []

        def error(column: str, message: str) -> None:
            problems.append((column, message))

        cid = cells.get("id") or None
        exists = False
        if cid is not None:
            exists = self._check_id(cid, number, error)

        fields: dict[str, Any] = {}
        if cells.get("name"):
            fields["name"] = cells["name"]
        for column, (target, longest) in TEXT_COLUMNS.items():
            if cells.get(column):
                if len(cells[column]) > longest:
                    error(column, f"longer than {longest} characters")
                else:
                    fields[target] = cells[column]
        if cells.get("lifetime_value"):
            try:
                fields["lifetime_value"] = _parse_number(cells["lifetime_value"])
            except ValueError as exc:
                error("lifetime_value", str(exc))
        for column in BOOLEAN_COLUMNS:
            if cells.get(column):
                try:
                    fields[column] = _parse_bool(cells[column])
                except ValueError as exc:
                    error(column, str(exc))
        if cells.get("notes"):
            fields["notes"] = cells["notes"]

        found: list[tuple[str, str]] = []
        for column, kind in IDENTITY_COLUMNS.items():
            # Only phone and e-mail cells list several values: ";" could be part of a chat token.
            values = cells.get(column, "").split(";") if kind != "chat" else [cells.get(column, "")]
            for value in (v.strip() for v in values):
                if not value:
                    continue
                try:
                    norm = normalise(kind, value, self.region)
                except IdentityError as exc:
                    error(column, str(exc))
                    continue
                if (kind, norm) in found:  # "0612345678;+31612345678" in one cell: one identity
                    continue
                found.append((kind, norm))
                self._check_identity(kind, norm, column, cid, number, error)

        has_identity = any(cells.get(column) for column in IDENTITY_COLUMNS)
        if not exists and "name" not in fields and not has_identity:
            error("", "neither a name nor a phone, e-mail or chat token")
        if problems:
            for column, message in sorted(problems, key=lambda p: self.order.get(p[0], -1)):
                self.report.error(number, column, message)
            return None
        return _Row(number, cid, exists, fields, found)

    def _check_id(self, cid: str, number: int, error: _Report) -> bool:
        """Whether ``cid`` is an existing customer to update; reports what makes the id unusable."""
        if len(cid) > MAX_ID:
            error("id", f"longer than {MAX_ID} characters")
            return False
        if cid in self.ids:
            error("id", f"id {cid} is also on row {self.ids[cid]}")
            return False
        self.ids[cid] = number
        stored = self.conn.execute(
            select(customers.c.merged_into, customers.c.erased_ms).where(customers.c.id == cid)
        ).one_or_none()
        if stored is None:
            return False
        if stored.erased_ms is not None:
            # An old CRM export must not bring back what an erasure removed.
            error("id", f"customer {cid} was erased; its data must not be imported again")
        elif stored.merged_into is not None:
            survivor = surviving_id(self.conn, cid) or stored.merged_into
            error("id", f"customer {cid} was merged into {survivor}; use that id")
        return True

    def _check_identity(self, kind: str, norm: str, column: str, cid: str | None, number: int, error: _Report) -> None:
        earlier = self.identities.setdefault((kind, norm), number)
        if earlier != number:
            error(column, f"{kind} {norm} is also on row {earlier}")
            return
        owner = self.conn.execute(
            select(identities.c.customer_id).where(identities.c.kind == kind, identities.c.value == norm)
        ).scalar_one_or_none()
        if owner is not None and owner != cid:
            error(column, f"{kind} {norm} already belongs to customer {owner}")


def _database_message(exc: Exception) -> str:
    # The driver's first line says what was refused; the statement and its parameters (personal data) stay out.
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
    return str(exc) or type(exc).__name__


def _write(conn: Connection, row: _Row, now_ms: int, region: str | None) -> None:
    if row.exists:
        assert row.customer_id is not None
        update_customer(conn, row.customer_id, now_ms, **row.fields)
        cid = row.customer_id
    else:
        cid = create_customer(conn, now_ms, customer_id=row.customer_id, **row.fields)
    for kind, value in row.identities:
        add_identity(conn, cid, kind, value, now_ms, region=region)


def import_customers_csv(
    conn: Connection,
    source: TextIO | str | os.PathLike[str],
    now_ms: int,
    *,
    region: str | None = DEFAULT_REGION,
    source_name: str = "<file>",
    dry_run: bool = False,
    actor: str = "system",
) -> ImportReport:
    """Import customers from a CSV file (a path or an open text or binary stream) in the caller's transaction.

    Validates every row first; then, unless ``dry_run``, writes the valid rows (each in a savepoint, so a row
    the database refuses leaves nothing behind) and records a ``customer.import`` audit entry with the counts.
    National phone numbers are read in ``region``."""
    if source_name == "<file>" and isinstance(source, str | os.PathLike):
        source_name = os.fspath(source)
    report = ImportReport(source=source_name, dry_run=dry_run)
    valid = _validate(conn, source, report, region)
    if dry_run:
        report.created = sum(not r.exists for r in valid)
        report.updated = sum(r.exists for r in valid)
        return report
    # The audit row goes first: it also makes the transaction real before the first savepoint. pysqlite does
    # not BEGIN until a data-changing statement, and a SAVEPOINT that opened the transaction would commit it
    # on RELEASE, beyond the caller's rollback.
    audit_id = conn.execute(
        insert(audit_log).values(at_ms=now_ms, actor=actor, action="customer.import", customer_id=None, detail="{}")
    ).inserted_primary_key[0]
    for row in valid:
        try:
            with conn.begin_nested():
                _write(conn, row, now_ms, region)
        except (IdentityTaken, UnknownCustomer, SQLAlchemyError) as exc:  # a concurrent writer got there first
            report.error(row.number, "", f"not imported: {_database_message(exc)}")
            report.skipped += 1
            continue
        if row.exists:
            report.updated += 1
        else:
            report.created += 1
    detail = {
        "rows": report.rows_read,
        "created": report.created,
        "updated": report.updated,
        "skipped": report.skipped,
        "errors": len(report.errors),
    }
    conn.execute(update(audit_log).where(audit_log.c.id == audit_id).values(detail=json.dumps(detail, sort_keys=True)))
    return report


def _validate(
    conn: Connection, source: TextIO | str | os.PathLike[str], report: ImportReport, region: str | None
) -> list[_Row]:
    text = _read_text(source, report)
    if text is None:
        return []
    sniffed = _sniff(text)
    if sniffed is None:
        report.error(
            1,
            "",
            "no header row: the first row names none of the known columns"
            f" ({', '.join(COLUMNS)}); is this a customer CSV file?",
        )
        return []
    delimiter, header_number, header = sniffed
    columns: dict[int, str] = {}
    for index, cell in enumerate(header):
        name = _header_name(cell)
        where = f"column {_column_letter(index)}"
        if not name:
            continue
        if name not in COLUMNS:
            report.warnings.append(f"{where}: unknown column {cell.strip()!r} ignored")
        elif name in columns.values():
            report.warnings.append(f"{where}: second {name!r} column ignored")
        else:
            columns[index] = name

    validator = _Validator(conn, report, region, {name: i for i, name in columns.items()})
    valid: list[_Row] = []
    try:
        rows = [(n, cells) for n, cells in _records(text, delimiter) if n > header_number]
    except csv.Error as exc:  # e.g. a field beyond csv's size limit: the rest of the file cannot be trusted
        report.error(FILE, "", f"cannot be read as CSV: {exc}; nothing was imported")
        return []
    for number, cells in rows:
        if not any(c.strip() for c in cells):
            continue
        report.rows_read += 1
        extra = [c for c in cells[len(header) :] if c.strip()]
        if extra:
            # Values beyond the header mean the columns are shifted (an unquoted delimiter inside a name),
            # so every value on the row may be in the wrong column.
            report.error(
                number,
                "",
                f"{len(cells)} cells but the header has {len(header)} columns"
                f" (a {DELIMITERS[delimiter]} inside a value that is not quoted?)",
            )
            report.skipped += 1
            continue
        values = {name: cells[i].strip() for i, name in columns.items() if i < len(cells)}
        bad = [(name, why) for name, value in values.items() if (why := _bad_text(value)) is not None]
        if bad:
            # The whole row is skipped: a row with one cell we cannot read may have its others misread too.
            for name, why in bad:
                report.error(number, name, f"{why}; the row was not imported")
            report.skipped += 1
            continue
        row = validator.row(number, values)
        if row is None:
            report.skipped += 1
        else:
            valid.append(row)
    if not report.rows_read:
        report.warnings.append("the file has a header but no data rows")
    return valid
