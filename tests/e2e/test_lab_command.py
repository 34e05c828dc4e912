"""`make lab` itself (`python -m lab`): every call passes with the real FreeSWITCH on the
business side, and what it prints shows FreeSWITCH's own legs and what it negotiated. On a stock
FreeSWITCH the three calls that put DTLS straight on it are skipped with the reason (they need
patches/freeswitch/0001), never failed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from lab.media.freeswitch_patch import is_patched
from provisioning.freeswitch_binary import freeswitch_binary
from tests.e2e.conftest import skip_without_freeswitch

pytestmark = skip_without_freeswitch()


def test_lab_command_runs_every_call_through_the_real_switch() -> None:
    done = subprocess.run([sys.executable, "-m", "lab"], capture_output=True, text=True,
                          timeout=240, check=False, cwd=Path(__file__).resolve().parents[2])
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    patched = is_patched(freeswitch_binary())
    summary = re.fullmatch(r"lab: (\d+) passed, 0 failed", lines[-1])
    # calls, metrics check, media calls (the DTLS ones only on a patched build), the
    # rtpengine-with-FreeSWITCH section's 4 and the rtpengine section's 4
    assert summary and int(summary[1]) >= (23 if patched else 20), lines[-1]
    skipped = re.fullmatch(r"lab: FreeSWITCH calls: (\d+) ran, (\d+) skipped \(.*", lines[-2])
    assert skipped and int(skipped[2]) == (0 if patched else 3), lines[-2]
    text = done.stdout
    if not patched:  # skipped with the reason, never failed
        assert text.count("\n[SKIP] ") == 3 and "needs patches/freeswitch/0001" in text
    # FreeSWITCH's legs, from its own siptrace: a UIC it answered, a BIC it placed
    assert "edge        ──▶ FreeSWITCH  INVITE sip:+1555" in text
    assert "edge        ◀── FreeSWITCH  SIP/2.0 200 OK" in text
    assert "FreeSWITCH  ──▶ edge        INVITE sip:+15550123456@" in text
    assert "edge        ──▶ Meta        INVITE sip:+15550123456@wa.meta.vc" in text
    # what it negotiated, per SRTP mode
    assert "(SDES): RTP/SAVP, crypto AES_CM_128_HMAC_SHA1_80" in text
    assert "(DTLS): UDP/TLS/RTP/SAVPF, fingerprint sha-256 " in text and "setup:active" in text
    assert "CDR uic ended: cause NORMAL_CLEARING, wacid wacid.lab" in text
    # what wa-esl had FreeSWITCH do: media settings, answer, silence first, the IVR-style route
    assert ("wa-esl had FreeSWITCH run: multiset(^^|rtp_secure_media=mandatory:AES_CM_128_HMAC"
            in text)
    assert "answer(), playback(silence_stream://200,1400), playback(tone_stream://" in text
    assert "the edge told FreeSWITCH: X-WA-Diagnosis: declined" in text
    # both /metrics endpoints scraped at the end agree with the calls placed
    assert "[PASS] metrics scraped from the edge and wa-esl match the calls placed" in text
    # the media section: four flows (two, SDES, on a stock build), audio heard both ways on each
    media = media_lines(text, "lab: media section", "lab: call-permission section")
    assert len(media) == (4 if patched else 2), media
    assert all(line.endswith("tone 440 Hz heard by WhatsApp, 1000 Hz heard by FreeSWITCH")
               for line in media), media
    assert sum(line.startswith("  media: DTLS AES_CM_128_HMAC_SHA1_80, handshake ")
               for line in media) == (2 if patched else 0), media
    # the same four through rtpengine to FreeSWITCH on plain RTP, DTLS on a stock build too
    anchored = media_lines(text, "lab: rtpengine-with-FreeSWITCH section", "lab: rtpengine section")
    assert len(anchored) == 4, anchored
    assert all(line.endswith("tone 440 Hz heard by WhatsApp, 1000 Hz heard by FreeSWITCH")
               for line in anchored), anchored
    assert sum(line.startswith("  media: DTLS AES_CM_128_HMAC_SHA1_80, handshake ")
               for line in anchored) == 2, anchored
    # and a DTMF digit each way on each of them, on a stock FreeSWITCH too (esl/media.py)
    section = text.split("\nlab: rtpengine-with-FreeSWITCH section", 1)[1].split(
        "\nlab: rtpengine section", 1)[0]
    dtmf = [line for line in section.splitlines() if line.startswith("  = DTMF: ")]
    assert len(dtmf) == 4 and all("FreeSWITCH got 7;" in line and "WhatsApp got 5 " in line
                                  for line in dtmf), dtmf
    assert section.count("srtp DTLS (rtpengine)") == 2, section  # the CDR: Meta's side
    # the rtpengine section: its four flows with a plain-RTP business
    assert len(media_lines(text, "lab: rtpengine section", "lab: FreeSWITCH calls:")) == 4


def media_lines(text: str, start: str, end: str) -> list[str]:
    """The `  media: ` lines of the section that begins with line `start`, up to `end`."""
    section = text.split("\n" + start, 1)[1].split("\n" + end, 1)[0]
    return [line for line in section.splitlines() if line.startswith("  media: ")]
