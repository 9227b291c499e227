"""Voice: calls on the simulated switch joined to the router, the IVR on calls, callbacks, and the SIP front door
(a sans-I/O user-agent server and its UDP transport onto the switch).
"""
