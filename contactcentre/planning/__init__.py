"""Capacity planning: Erlang B, C and A and the staffing solver (``erlang``)."""
