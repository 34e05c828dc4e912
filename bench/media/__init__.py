"""make bench-media: concurrent SRTP calls with Opus on one FreeSWITCH."""
