"""Simulation around the ACD core: the discrete-event simulator (virtual time, the production router),
scenarios and reports, and the simulated people of ``contactcentre demo`` who use the live server's real
protocols (``demo_live``, ``clients``)."""
