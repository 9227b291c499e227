"""Duplicate customers: finding pairs that are probably one person, and merging one into the other.

Two live customers can never share an identity (``identities`` has a unique ``(kind, value)``), so duplicates
show up as *near* matches: the same person typed ``jan.devries@x.nl`` once and ``jandevries@x.nl`` another time,
a Gmail address with and without dots or a ``+shop`` tag, or a mobile number normalised with the wrong country
code (``+32 612345678`` from a form whose region was wrong, ``+31 612345678`` from the phone system).

A pair is proposed when (rules in ``_judge``):

* the folded names are equal and an e-mail or phone near match or the same account manager supports it;
* the names are similar (``min_name_score``) and an e-mail or phone near match supports it;
* one name is missing (a customer created by an inbound call) and a strong e-mail or phone near match exists.

Names alone never pair two customers: "Jan Jansen" is thousands of people. Names that are clearly different veto
a pair however strong the identity signal, because near-identical addresses or numbers are also what a couple or
a family sharing a mailbox has. The tier is shared by whole segments, so it only adds to the score of a pair that
qualifies otherwise.

``find_duplicates`` only proposes; a person (or a rule in the caller) decides, and ``merge_customers`` acts.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from itertools import combinations

import phonenumbers
from sqlalchemy import Connection, insert, select, update

from contactcentre.store.customers import surviving_id, update_customer
from contactcentre.store.schema import audit_log, cases, customers, identities, interactions

# ---------------------------------------------------------------------------------------------- finding pairs

# Weights of the signals, combined as independent evidence (1 - Π(1 - w)). The name counts at most
# NAME_WEIGHT, so that no name match alone reaches the score of a name plus an identity near match.
NAME_WEIGHT = 0.6
W_GMAIL_SAME_MAILBOX = 0.95  # Gmail ignores dots and +tags: literally one mailbox
W_EMAIL_VARIANT = 0.85  # same domain, local parts equal once dots, dashes, underscores and +tags are removed
W_PHONE_NSN = 0.85  # same national significant number under another country code
W_PHONE_DIGITS = 0.8  # same last 9 digits
W_EMAIL_LOCAL = 0.5  # same (distinctive) mailbox name at another provider
W_MANAGER = 0.35
W_TIER = 0.05
STRONG_IDENTITY = 0.8  # enough to pair when one of the two has no name

# A blocking key shared by more customers than this is not evidence of anything (a switchboard's digits, a
# generic mailbox name) and would cost quadratic comparisons; such a block is skipped.
MAX_BLOCK = 100

PHONE_TAIL = 9  # a national significant number is 9 digits in NL, BE, FR, ES, ...
MIN_NSN = 7  # shorter national numbers coincide too easily across countries
MIN_LOCAL = 6  # a mailbox name shorter than this ("info", "jan") is shared by strangers at other providers
GENERIC_LOCAL = frozenset(
    {"info", "contact", "admin", "office", "sales", "support", "service", "hello", "noreply", "mail", "klantenservice"}
)
GMAIL = "gmail.com"
DOMAIN_ALIASES = {"googlemail.com": GMAIL}

# Name particles (Dutch, German, French, ...) that are often dropped or moved: "Berg, M. van den".
PARTICLES = frozenset(
    {"de", "der", "den", "het", "t", "van", "von", "vom", "zu", "ter", "ten", "te", "la", "le", "du", "des", "di"}
)
CORE_DISCOUNT = 0.95


@dataclass(frozen=True)
class DuplicatePair:
    """Two live customers that are probably one person; ``a < b``. ``reasons`` are for the person deciding."""

    a: str
    b: str
    score: float
    reasons: list[str] = field(default_factory=list)


@dataclass
class _Customer:
    id: str
    name: str | None
    key: str | None
    key_core: str | None  # the key without particles
    tier: str | None
    manager: str | None
    emails: list[tuple[str, str, str]] = field(default_factory=list)  # (address, squashed local part, domain)
    phones: list[tuple[str, int, str, str]] = field(default_factory=list)  # (E.164, country code, NSN, digits)


def _squash_local(local: str) -> str:
    """The mailbox name with the +tag and the separators people add or leave out removed."""
    return re.sub(r"[._-]", "", local.split("+", 1)[0])


def _email_parts(address: str) -> tuple[str, str, str]:
    local, _, domain = address.rpartition("@")
    domain = DOMAIN_ALIASES.get(domain, domain)
    return address, _squash_local(local), domain


def _phone_parts(value: str) -> tuple[str, int, str, str]:
    digits = re.sub(r"\D", "", value)
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:  # stored before E.164 was enforced; the digits still count
        return value, 0, "", digits
    return value, number.country_code or 0, phonenumbers.national_significant_number(number), digits


def _distinctive_local(squashed: str) -> bool:
    return len(squashed) >= MIN_LOCAL and squashed not in GENERIC_LOCAL


def _core(key: str | None) -> str | None:
    if key is None:
        return None
    return " ".join(w for w in key.split() if w not in PARTICLES) or key


def _name_similarity(a: _Customer, b: _Customer) -> float | None:
    """1.0 for equal folded names, else the better ``SequenceMatcher`` ratio of the keys with and (discounted)
    without particles; None when either name is missing."""
    if a.key is None or b.key is None:
        return None
    if a.key == b.key:
        return 1.0
    full = SequenceMatcher(None, a.key, b.key).ratio()
    # Equal cores ("jan vries" vs "jan de vries") are similar, not equal names: the particle may be the
    # difference, so the core's ratio is discounted.
    core = CORE_DISCOUNT * SequenceMatcher(None, a.key_core, b.key_core).ratio()
    return max(full, core)


def _identity_signals(a: _Customer, b: _Customer) -> list[tuple[float, str]]:
    found: list[tuple[float, str]] = []
    for ea, la, da in a.emails:
        for eb, lb, db in b.emails:
            if la != lb or not la:
                continue
            if da == db == GMAIL:
                found.append((W_GMAIL_SAME_MAILBOX, f"e-mail {ea} and {eb} are one Gmail mailbox"))
            elif da == db:
                found.append((W_EMAIL_VARIANT, f"e-mail {ea} ≈ {eb}"))
            elif _distinctive_local(la):
                found.append((W_EMAIL_LOCAL, f"e-mail {ea} and {eb}: same mailbox name at another provider"))
    for pa, cca, nsna, dga in a.phones:
        for pb, ccb, nsnb, dgb in b.phones:
            if nsna and nsna == nsnb and cca != ccb and len(nsna) >= MIN_NSN:
                found.append((W_PHONE_NSN, f"phone {pa} and {pb}: same national number {nsna}"))
            elif len(dga) >= PHONE_TAIL and dga[-PHONE_TAIL:] == dgb[-PHONE_TAIL:]:
                found.append((W_PHONE_DIGITS, f"phone {pa} and {pb} end in the same {PHONE_TAIL} digits"))
    return found


def _judge(a: _Customer, b: _Customer, min_name_score: float) -> DuplicatePair | None:
    signals = _identity_signals(a, b)
    identity = max((w for w, _ in signals), default=0.0)
    same_manager = a.manager is not None and a.manager == b.manager
    similarity = _name_similarity(a, b)
    reasons: list[str] = []
    weights: list[float] = []
    if similarity is None:
        if identity < STRONG_IDENTITY:
            return None
    else:
        if similarity == 1.0:
            if not (signals or same_manager):
                return None
            if (a.name or "").strip().casefold() == (b.name or "").strip().casefold():
                reasons.append(f"same name {(a.name or '').strip()!r}")
            else:
                reasons.append(f"same name {a.name!r} / {b.name!r}")
        elif similarity >= min_name_score and signals:
            reasons.append(f"similar names {a.name!r} ≈ {b.name!r} ({similarity:.2f})")
        else:
            return None
        weights.append(NAME_WEIGHT * similarity)
    for w, reason in sorted(signals, key=lambda s: -s[0]):
        weights.append(w)
        reasons.append(reason)
    if same_manager:
        weights.append(W_MANAGER)
        reasons.append(f"same account manager {a.manager!r}")
    if a.tier is not None and a.tier == b.tier:
        weights.append(W_TIER)
        reasons.append(f"same tier {a.tier!r}")
    doubt = 1.0
    for w in weights:
        doubt *= 1.0 - w
    return DuplicatePair(a.id, b.id, round(1.0 - doubt, 4), reasons)


def _load_live(conn: Connection) -> dict[str, _Customer]:
    live = (customers.c.merged_into.is_(None)) & (customers.c.erased_ms.is_(None))
    rows = conn.execute(
        select(
            customers.c.id, customers.c.name, customers.c.name_key, customers.c.tier, customers.c.account_manager_id
        ).where(live)
    ).all()
    people = {r.id: _Customer(r.id, r.name, r.name_key, _core(r.name_key), r.tier, r.account_manager_id) for r in rows}
    idents = conn.execute(
        select(identities.c.customer_id, identities.c.kind, identities.c.value)
        .join(customers, customers.c.id == identities.c.customer_id)
        .where(live, identities.c.kind.in_(("email", "phone")))
        .order_by(identities.c.customer_id, identities.c.kind, identities.c.value)
    ).all()
    for cid, kind, value in idents:
        person = people[cid]
        if kind == "email":
            person.emails.append(_email_parts(value))
        else:
            person.phones.append(_phone_parts(value))
    return people


def _blocks(people: dict[str, _Customer]) -> dict[tuple[str, ...], set[str]]:
    """Customers grouped by keys that every accepted pair shares at least one of.

    Every rule in ``_judge`` needs an identity near match (a squashed e-mail, a mailbox name, a national
    number, a phone tail) or equal names with the same account manager, and each of those is a key here. So
    comparing only within blocks finds exactly the pairs that comparing all pairs would (blocks above
    ``MAX_BLOCK`` aside), at a cost that grows with the block sizes rather than the square of the customers.
    A block on name prefixes would add comparisons but no pairs: similar names alone never qualify."""
    blocks: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for p in people.values():
        if p.key is not None and p.manager is not None:
            blocks[("name+manager", p.key, p.manager)].add(p.id)
        for _, squashed, domain in p.emails:
            if squashed:
                blocks[("email", squashed, domain)].add(p.id)
            if _distinctive_local(squashed):
                blocks[("mailbox", squashed)].add(p.id)
        for _, _, nsn, digits in p.phones:
            if len(nsn) >= MIN_NSN:
                blocks[("nsn", nsn)].add(p.id)
            if len(digits) >= PHONE_TAIL:
                blocks[("tail", digits[-PHONE_TAIL:])].add(p.id)
    return blocks


def find_duplicates(conn: Connection, *, min_name_score: float = 0.88, limit: int | None = None) -> list[DuplicatePair]:
    """Pairs of live customers that are probably one person, most certain first (each pair once, ``a < b``)."""
    people = _load_live(conn)
    candidates: set[tuple[str, str]] = set()
    for members in _blocks(people).values():
        if 1 < len(members) <= MAX_BLOCK:
            candidates.update(combinations(sorted(members), 2))
    pairs = [p for a, b in candidates if (p := _judge(people[a], people[b], min_name_score)) is not None]
    pairs.sort(key=lambda p: (-p.score, p.a, p.b))
    return pairs if limit is None else pairs[:limit]


# ---------------------------------------------------------------------------------------------------- merging


class MergeError(Exception):
    """The merge was refused; the message says why (nothing was changed)."""


@dataclass(frozen=True)
class MergeResult:
    survivor_id: str
    merged_id: str
    identities: int  # moved to the survivor
    cases: int
    interactions: int
    pointers: int  # customers merged into ``merged_id`` earlier, now pointing at the survivor directly


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _combined_fields(survivor: dict[str, object], merged: dict[str, object], merged_id: str) -> dict[str, object]:
    """The survivor's new field values: its own where it has them, the merged customer's where it has not."""
    changes: dict[str, object] = {}
    for name in ("name", "tier", "value_segment", "account_manager_id", "language"):
        if _blank(survivor[name]) and not _blank(merged[name]):
            changes[name] = merged[name]
    values = [float(v) for v in (survivor["lifetime_value"], merged["lifetime_value"]) if isinstance(v, int | float)]
    # Both rows usually count the same purchases (one person, two records in one CRM), so the larger is the
    # better estimate; a sum would double them.
    if values and max(values) != survivor["lifetime_value"]:
        changes["lifetime_value"] = max(values)
    own, other = survivor["notes"], merged["notes"]
    if not _blank(other) and (_blank(own) or str(other) not in str(own)):
        note = f"[from {merged_id}] {other}"
        changes["notes"] = note if _blank(own) else f"{own}\n{note}"
    # do_not_call is a request to leave the person alone: if either record has it, the person made it.
    if merged["do_not_call"] and not survivor["do_not_call"]:
        changes["do_not_call"] = True
    # A consent is kept only if both records hold it. A record without it may be a withdrawal the other
    # record never heard of, and the law asks us to prove consent, not its absence; contacting someone who
    # withdrew is the harm, asking again someone who had consented is only a cost.
    for name in ("consent_email", "consent_sms", "consent_calls"):
        if survivor[name] and not merged[name]:
            changes[name] = False
    return changes


def merge_customers(
    conn: Connection, survivor_id: str, merged_id: str, now_ms: int, *, actor: str = "system"
) -> MergeResult:
    """Fold ``merged_id`` into ``survivor_id``: its identities, cases and interactions move, empty fields of the
    survivor are filled, consents combine the privacy-safe way, and its row stays behind as a pointer.

    Runs in the caller's transaction; raises ``MergeError`` (before changing anything) for a merge with
    itself, an unknown, already merged or erased customer."""
    if survivor_id == merged_id:
        raise MergeError(f"cannot merge customer {survivor_id} with itself")
    # Lock both rows (in id order, so that two opposite merges wait instead of deadlocking): a concurrent
    # merge or erasure of either would otherwise interleave with this one. SQLite ignores FOR UPDATE; its
    # writer lock already serialises.
    rows = {
        r["id"]: dict(r)
        for r in conn.execute(
            select(customers)
            .where(customers.c.id.in_((survivor_id, merged_id)))
            .order_by(customers.c.id)
            .with_for_update()
        ).mappings()
    }
    for role, cid in (("survivor", survivor_id), ("customer to merge", merged_id)):
        row = rows.get(cid)
        if row is None:
            raise MergeError(f"{role} {cid}: no such customer")
        if row["erased_ms"] is not None:
            raise MergeError(f"{role} {cid} was erased and cannot take part in a merge")
        if row["merged_into"] is not None:
            final = surviving_id(conn, cid) or row["merged_into"]
            raise MergeError(f"{role} {cid} was already merged into {row['merged_into']}; its records are with {final}")
    survivor, merged = rows[survivor_id], rows[merged_id]

    moved_identities = conn.execute(
        update(identities).where(identities.c.customer_id == merged_id).values(customer_id=survivor_id)
    ).rowcount
    # The cases' updated_ms stays: a merge is bookkeeping, not activity on the case, and SLA views sort by it.
    moved_cases = conn.execute(
        update(cases).where(cases.c.customer_id == merged_id).values(customer_id=survivor_id)
    ).rowcount
    moved_interactions = conn.execute(
        update(interactions).where(interactions.c.customer_id == merged_id).values(customer_id=survivor_id)
    ).rowcount
    # Earlier merges into the merged customer point at the survivor directly, so that pointer chains stay one
    # step long (and a later merge never meets a cycle).
    repointed = conn.execute(
        update(customers).where(customers.c.merged_into == merged_id).values(merged_into=survivor_id, updated_ms=now_ms)
    ).rowcount
    update_customer(conn, survivor_id, now_ms, **_combined_fields(survivor, merged, merged_id))
    conn.execute(
        update(customers).where(customers.c.id == merged_id).values(merged_into=survivor_id, updated_ms=now_ms)
    )
    result = MergeResult(survivor_id, merged_id, moved_identities, moved_cases, moved_interactions, repointed)
    # Ids and counts only: the audit log outlives an erasure, so it must not hold what erasure removes.
    detail = {
        "merged_id": merged_id,
        "identities": moved_identities,
        "cases": moved_cases,
        "interactions": moved_interactions,
        "pointers": repointed,
    }
    conn.execute(
        insert(audit_log),
        [
            {
                "at_ms": now_ms,
                "actor": actor,
                "action": "customer.merge",
                "customer_id": survivor_id,
                "detail": json.dumps(detail, sort_keys=True),
            }
        ],
    )
    return result
