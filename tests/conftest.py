"""Shared test set-up: Hypothesis profiles and a router harness driven by a fake clock."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

# CI runs the long profile (the stateful router test then covers >= 100,000 steps); locally "dev" is quick.
settings.register_profile("ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
