"""The live demo: seeded customers and simulated people on the real sockets."""
