"""A media peer that plays WhatsApp's (Meta's) side of a call's audio, one module per layer.

Laid out like aiortc's transports, each layer testable alone:

- `sdp`: the offers and answers Meta sends (SDES `RTP/SAVP` + `a=crypto`, or DTLS
  `UDP/TLS/RTP/SAVPF` + ICE-lite) and the parts of the business's SDP the peer needs;
- `stun`: the ICE-lite responder (always CONTROLLED, checks MESSAGE-INTEGRITY and FINGERPRINT,
  answers 487 to a peer that also claims CONTROLLED, takes the nominated pair);
- `dtls`: the DTLS-SRTP server (and a client for tests), keys exported as RFC 5764 says;
- `srtp`: SRTP/SRTCP sessions from SDES or DTLS keys, with authentication failures counted;
- `rtp`: RTP/RTCP headers and the RFC 7983 demultiplexing of one UDP port;
- `opus`: the Opus codec (libopus);
- `tone`: sine tones and the dominant frequency of what was heard;
- `peer`: the orchestration, with Meta's media rules (silent until the business's first packet,
  20 s / 30 s no-media timeouts) and the per-call report.
"""
