"""Parties that play an attacker or a scanner on the Internet against the edge.

They target loopback only (`targets.loopback_target` refuses anything else) and every loop is
bounded in count and in time, so the security tests and `make bench-abuse` can reuse them.
"""
