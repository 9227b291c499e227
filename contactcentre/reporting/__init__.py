"""Projections of the event stream: Prometheus metrics, the console's queue figures, IVR statistics."""
