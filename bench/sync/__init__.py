"""The provision sync benchmark (`make bench-sync`)."""
