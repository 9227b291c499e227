"""The CTI link: the simulated switch's CSTA-style operations and events over TCP, for softphones, tests and the
load generator (docs/cti.md).
"""
