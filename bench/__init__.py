"""Benchmarks: each a `make bench-NAME` target whose last line is `RESULT key=value ...`."""
