"""Simulation around the ACD core: for now, the seeded live traffic of ``contactcentre demo``."""
