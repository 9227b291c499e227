"""An offer (reservation): one contact held for one agent until accepted, rejected, expired or cancelled."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from contactcentre.acd.agent import Agent
    from contactcentre.acd.contact import Contact
    from contactcentre.acd.timers import Timer


class Offer:
    __slots__ = ("agent", "contact", "expires_ms", "id", "made_ms", "timer")

    def __init__(self, offer_id: str, contact: Contact, agent: Agent, made_ms: int, expires_ms: int) -> None:
        self.id = offer_id
        self.contact = contact
        self.agent = agent
        self.made_ms = made_ms
        self.expires_ms = expires_ms
        self.timer: Timer | None = None

    def __repr__(self) -> str:
        return f"Offer({self.id} {self.contact.id}->{self.agent.id} until {self.expires_ms})"
