"""make bench-abuse: the long attack run against a loopback edge (see run.py)."""
