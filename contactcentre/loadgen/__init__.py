"""The load generator: customers and agents over real sockets against a running server."""
