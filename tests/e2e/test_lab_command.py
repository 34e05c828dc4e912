"""`make lab` itself (`python -m lab`): every call passes with the real FreeSWITCH on the
business side, and what it prints shows FreeSWITCH's own legs and what it negotiated."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import skip_without_freeswitch

pytestmark = skip_without_freeswitch()


def test_lab_command_runs_every_call_through_the_real_switch() -> None:
    done = subprocess.run([sys.executable, "-m", "lab"], capture_output=True, text=True,
                          timeout=240, check=False, cwd=Path(__file__).resolve().parents[2])
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout + done.stderr
    summary = re.fullmatch(r"lab: (\d+) passed, 0 failed", lines[-1])
    assert summary and int(summary[1]) >= 12, lines[-1]  # calls, metrics check, 4 media calls
    text = done.stdout
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
    # the media section: four flows, audio heard both ways on each
    media = [line for line in lines if line.startswith("  media: ")]
    assert len(media) == 4, media
    assert all(line.endswith("tone 440 Hz heard by WhatsApp, 1000 Hz heard by FreeSWITCH")
               for line in media), media
    assert sum(line.startswith("  media: DTLS AES_CM_128_HMAC_SHA1_80, handshake ")
               for line in media) == 2, media
