"""The agent gateway: the console's WebSocket protocol (docs/protocol.md)."""
