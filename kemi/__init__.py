"""The Kamailio KEMI edge toward Meta.

Everything in this package runs inside Kamailio's embedded Python (Debian's system 3.11):
standard library only. `edge` is the thin adapter over KSR; the other modules are plain
functions that the tests call without Kamailio.
"""
