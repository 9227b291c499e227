"""The discrete-event simulator around the production router (imports only acd, events, config and planning)."""
