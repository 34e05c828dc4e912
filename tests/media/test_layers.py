"""Each layer of the media peer alone: tones, Opus, SDP, DTLS-SRTP keys, SRTP authentication."""

from __future__ import annotations

import pytest

from lab.media.dtls import DtlsEndpoint, make_certificate
from lab.media.opus import FRAME_SAMPLES, SAMPLE_RATE, OpusDecoder, OpusEncoder
from lab.media.rtp import Kind, RtpHeader, classify, parse_rtp, sender_report
from lab.media.sdp import (
    LocalMedia,
    SdpError,
    SrtpMode,
    build_sdp,
    check_remote,
    parse_sdp,
    sdes_remote_key,
)
from lab.media.srtp import SrtpKeys, SrtpSession, new_master_key
from lab.media.tone import ToneGenerator, dominant_frequency


@pytest.mark.parametrize("frequency", [440.0, 1000.0, 2600.0])
def test_dominant_frequency_of_a_tone(frequency: float) -> None:
    pcm = ToneGenerator(frequency, SAMPLE_RATE).frame(SAMPLE_RATE)
    heard = dominant_frequency(pcm, SAMPLE_RATE)
    assert heard is not None and abs(heard - frequency) < 1.0


def test_silence_and_too_little_audio_name_no_frequency() -> None:
    assert dominant_frequency(bytes(2 * SAMPLE_RATE), SAMPLE_RATE) is None
    assert dominant_frequency(ToneGenerator(440, SAMPLE_RATE).frame(100), SAMPLE_RATE) is None


def test_opus_round_trip_keeps_the_tone() -> None:
    tone, encoder, decoder = ToneGenerator(440, SAMPLE_RATE), OpusEncoder(), OpusDecoder()
    decoded = b"".join(decoder.decode(encoder.encode(tone.frame(FRAME_SAMPLES))) for _ in range(50))
    assert len(decoded) == 50 * FRAME_SAMPLES * 2
    heard = dominant_frequency(decoded, SAMPLE_RATE)
    assert heard is not None and abs(heard - 440) < 2


def test_opus_decoder_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        OpusDecoder().decode(b"\xff\xff\xff")


def test_rtp_demultiplexing_and_headers() -> None:
    packet = RtpHeader(111, 65535, 4294967295, 0xDEADBEEF, marker=True).pack() + b"opus"
    header, payload = parse_rtp(packet)
    assert (header.payload_type, header.sequence, header.ssrc) == (111, 65535, 0xDEADBEEF)
    assert header.marker
    assert payload == b"opus"
    assert classify(packet) is Kind.RTP
    assert classify(sender_report(1, 2, 3, 4)) is Kind.RTCP
    assert classify(b"\x00\x01") is Kind.STUN
    assert classify(b"\x16\xfe\xfd") is Kind.DTLS


def dtls_local(port: int = 4000) -> LocalMedia:
    return LocalMedia(SrtpMode.DTLS, "127.0.0.1", port, ice_ufrag="wAbC",
                      ice_pwd="wAbCdEfGhIjKlMnOpQrStUvW", fingerprint=make_certificate().fingerprint)


def test_dtls_offer_is_metas() -> None:
    offer = build_sdp(dtls_local(), offer=True)
    lines = offer.split("\r\n")
    assert "a=ice-lite" in lines and lines.index("a=ice-lite") < next(
        i for i, line in enumerate(lines) if line.startswith("m="))  # session level
    assert "m=audio 4000 UDP/TLS/RTP/SAVPF 111 126" in lines
    for wanted in ("a=rtpmap:111 opus/48000/2", "a=fmtp:111 useinbandfec=1",
                   "a=rtpmap:126 telephone-event/8000", "a=setup:actpass", "a=rtcp-mux",
                   "a=candidate:1 1 udp 2130706431 127.0.0.1 4000 typ host"):
        assert wanted in lines
    fingerprint = next(line for line in lines if line.startswith("a=fingerprint:sha-256 "))
    value = fingerprint.split()[1]
    assert value == value.upper() and len(value) == 95
    assert "a=setup:passive" in build_sdp(dtls_local(), offer=False)


def test_sdes_offer_and_key_round_trip() -> None:
    key = new_master_key()
    offer = build_sdp(LocalMedia(SrtpMode.SDES, "127.0.0.1", 4000, master_key=key), offer=True)
    assert "m=audio 4000 RTP/SAVP 111 126" in offer and "a=ice-lite" not in offer
    remote = parse_sdp(offer)
    check_remote(remote, SrtpMode.SDES, offer=True)
    assert sdes_remote_key(remote) == (1, key)


def test_mode_mismatch_is_refused_like_meta() -> None:
    sdes = parse_sdp(build_sdp(LocalMedia(SrtpMode.SDES, "127.0.0.1", 4000,
                                          master_key=new_master_key()), offer=True))
    with pytest.raises(SdpError, match="DTLS expects UDP/TLS/RTP/SAVPF"):
        check_remote(sdes, SrtpMode.DTLS, offer=False)
    dtls = parse_sdp(build_sdp(dtls_local(), offer=True))
    with pytest.raises(SdpError, match="SDES expects RTP/SAVP"):
        check_remote(dtls, SrtpMode.SDES, offer=False)


def test_dtls_answer_must_make_the_business_the_client() -> None:
    answer = parse_sdp(build_sdp(dtls_local(), offer=False))  # setup:passive
    with pytest.raises(SdpError, match="DTLS client"):
        check_remote(answer, SrtpMode.DTLS, offer=False)


def handshake(server: DtlsEndpoint, client: DtlsEndpoint) -> None:
    flight = client.start()
    for _ in range(10):
        back = [record for datagram in flight for record in server.feed(datagram)]
        flight = [record for datagram in back for record in client.feed(datagram)]
        if not back and not flight:
            return


def test_dtls_srtp_keys_agree_and_carry_srtp() -> None:
    server_cert, client_cert = make_certificate(), make_certificate()
    server = DtlsEndpoint(server_cert, server=True, remote_fingerprint=client_cert.fingerprint)
    client = DtlsEndpoint(client_cert, server=False, remote_fingerprint=server_cert.fingerprint)
    handshake(server, client)
    assert server.keys is not None and client.keys is not None, (server.failure, client.failure)
    assert server.keys.local == client.keys.remote and server.keys.remote == client.keys.local
    sender, receiver = SrtpSession(client.keys), SrtpSession(server.keys)
    rtp = RtpHeader(111, 1, 960, 42).pack() + b"audio"
    assert receiver.unprotect(sender.protect(rtp)) == rtp
    assert receiver.auth_failures == 0


def test_wrong_fingerprint_gives_no_keys() -> None:
    server_cert, client_cert, stranger = make_certificate(), make_certificate(), make_certificate()
    server = DtlsEndpoint(server_cert, server=True, remote_fingerprint=stranger.fingerprint)
    client = DtlsEndpoint(client_cert, server=False, remote_fingerprint=server_cert.fingerprint)
    handshake(server, client)
    assert server.keys is None
    assert server.failure is not None and "fingerprint mismatch" in server.failure


def test_tampered_or_wrongly_keyed_srtp_counts_as_auth_failure() -> None:
    keys = SrtpKeys(local=new_master_key(), remote=new_master_key())
    sender = SrtpSession(SrtpKeys(local=keys.remote, remote=keys.local))
    receiver = SrtpSession(keys)
    protected = bytearray(sender.protect(RtpHeader(111, 7, 960, 42).pack() + b"audio"))
    protected[14] ^= 0x01
    assert receiver.unprotect(bytes(protected)) is None
    stranger = SrtpSession(SrtpKeys(local=new_master_key(), remote=new_master_key()))
    assert receiver.unprotect(stranger.protect(RtpHeader(111, 8, 1920, 43).pack() + b"x")) is None
    assert receiver.auth_failures == 2
