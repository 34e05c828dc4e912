"""make bench-rtpengine: the media bench with rtpengine anchoring Meta's media (no FreeSWITCH)."""
