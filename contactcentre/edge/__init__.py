"""The front doors: one folder per protocol (e-mail, chat, agents, voice, web). Adapters translate a protocol into
router inputs and store calls; they decide nothing, read no router objects and run no SQL.
"""
