"""The demo's customer book: ten thousand made-up customers with a phone number, an e-mail address and a
chat token each, so that the demo's contacts land on real customers in the case store and screen-pop has
something to show.

Customer ``n`` is a pure function of ``n`` (its own ``random.Random(n)``), so demo traffic can name the
caller's number or address without reading the database, and every run has the same book.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from contactcentre.store.customers import seed_customers

BOOK_SIZE = 9_999  # cust0001 .. cust9999
# The regular: the first contact on every stream of the demo comes from customer 42 (+31600000042), so the
# README's screen-pop shows a history across channels within seconds of the start.
REGULAR = 42
TIER_SHARES = {"gold": 0.10, "silver": 0.30, "bronze": 0.60}

_FIRST = [
    "Anna",
    "Bram",
    "Carla",
    "Daan",
    "Emma",
    "Finn",
    "Greet",
    "Hugo",
    "Iris",
    "Jens",
    "Kim",
    "Lars",
    "Mila",
    "Noah",
    "Olga",
    "Piet",
    "Rosa",
    "Sem",
    "Tess",
    "Umut",
    "Vera",
    "Wim",
    "Yara",
    "Zoë",
    "Ahmed",
    "Fatima",
    "Lucas",
    "Sophie",
    "Mohamed",
    "Julia",
]
_LAST = [
    "de Vries",
    "Jansen",
    "van Dijk",
    "Bakker",
    "Visser",
    "Smit",
    "Meijer",
    "de Boer",
    "Mulder",
    "de Groot",
    "Bos",
    "Vos",
    "Peters",
    "Hendriks",
    "van Leeuwen",
    "Dekker",
    "Brouwer",
    "de Wit",
    "Dijkstra",
    "Smits",
    "El Amrani",
    "Yilmaz",
    "Janssens",
    "Kowalski",
    "Schmidt",
]
_DOMAINS = ("example.com", "example.nl", "example.org", "mail.example.net")


@dataclass(frozen=True)
class DemoCustomer:
    id: str
    name: str
    tier: str
    lifetime_value: float
    phone: str  # E.164
    email: str
    chat_token: str
    do_not_call: bool
    consent_email: bool


def demo_customer(n: int, tiers: tuple[str, ...] = tuple(TIER_SHARES)) -> DemoCustomer:
    rng = random.Random(n)
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    shares = [TIER_SHARES.get(t, 0.0) or 1.0 for t in tiers]
    tier = rng.choices(tiers, shares)[0] if tiers else "bronze"
    local = f"{first}.{last}".lower().replace(" ", "").replace("ë", "e")
    return DemoCustomer(
        id=f"cust{n:04d}",
        name=f"{first} {last}",
        tier=tier,
        lifetime_value=round(rng.lognormvariate(6.5, 1.0), 2),
        phone=f"+316{n:08d}",
        email=f"{local}{n}@{rng.choice(_DOMAINS)}",
        chat_token=f"visitor-{n:04d}-{rng.getrandbits(32):08x}",
        do_not_call=rng.random() < 0.05,
        consent_email=rng.random() < 0.6,
    )


def address_for(customer: DemoCustomer, channel: str) -> str:
    """The identity a contact on ``channel`` arrives with."""
    if channel == "email":
        return customer.email
    if channel == "chat":
        return customer.chat_token
    return customer.phone


def seed_demo_customers(conn: Any, now_ms: int, tiers: tuple[str, ...] = tuple(TIER_SHARES)) -> int:
    """Write the book into an empty store; returns how many customers."""
    book = [demo_customer(n, tiers) for n in range(1, BOOK_SIZE + 1)]
    seed_customers(
        conn,
        now_ms,
        [
            {
                "id": c.id,
                "name": c.name,
                "tier": c.tier,
                "lifetime_value": c.lifetime_value,
                "consent_email": c.consent_email,
                "consent_sms": False,
                "consent_calls": not c.do_not_call,
                "do_not_call": c.do_not_call,
            }
            for c in book
        ],
        [
            (c.id, kind, value)
            for c in book
            for kind, value in (("phone", c.phone), ("email", c.email), ("chat", c.chat_token))
        ],
    )
    return len(book)
