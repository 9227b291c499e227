"""The live centre: the facade adapters hold, the router's deadline driver, actions on contacts and agents, the
clock, and the one wiring place (``runtime``).
"""
