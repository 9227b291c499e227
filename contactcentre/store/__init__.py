"""Persistence. For now: the append-only event log (``eventlog``); the case store comes later."""

from contactcentre.store.eventlog import EventLogWriter, create_engine_for, read_events

__all__ = ["EventLogWriter", "create_engine_for", "read_events"]
