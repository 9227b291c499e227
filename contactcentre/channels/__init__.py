"""Channel adapters: translate a protocol (SMTP, WebSocket chat) into events and agents' messages back into
the protocol. They hold no routing decisions; they talk to the centre only through ``contactcentre.centre``.

Every channel adapter offers ``agent_message(contact_id, agent_id, text) -> message id`` (an agent's chat
line or e-mail reply to the customer of one of its contacts), registered in ``Centre.channels`` under its
channel name, so the agent gateway needs to know nothing about protocols.
"""
