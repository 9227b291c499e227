"""The chat channel: the customer's WebSocket protocol (docs/chat-protocol.md)."""
