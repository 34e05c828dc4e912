"""The local lab: real Kamailio, stunnel and SIPp on loopback, with a test CA made at run time.

`make lab` runs it; the tests use the same pieces so that what the lab shows is what is tested.
"""
