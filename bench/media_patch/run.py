"""DTLS with WhatsApp's ICE-lite media: stock FreeSWITCH against the patched build.

`make bench-media-patch STOCK=/path/to/stock/bin/freeswitch` places the same user-initiated DTLS
calls (and SDES ones as the reference both builds must pass) at each binary: a real FreeSWITCH
from the rendered configuration, wa-esl answering, the media peer playing WhatsApp. Per build it
prints the calls with audio both ways, the DTLS handshake and first-packet times, packets and
STUN role conflicts. Both builds are the user's (wa-sip builds no FreeSWITCH): the patched binary
is PATCHED=... or the one scripts/install-freeswitch finds, STOCK=... the stock one (default: a
leftover /opt/freeswitch.unpatched-*, if any).
Last line: RESULT stock_dtls_audio=<n>/<N> patched_dtls_audio=<n>/<N> ...
"""

from __future__ import annotations

import argparse
import asyncio
import glob
import os
import statistics
import tempfile
from pathlib import Path

from esl.controller import Controller
from esl.site import controller_settings
from lab.freeswitch import FreeswitchLab, FreeswitchPorts, dtls_certificate
from lab.media.freeswitch_call import (
    DTLS_NUMBER,
    FREESWITCH_TONE_HZ,
    PEER_TONE_HZ,
    SDES_NUMBER,
    MediaCall,
    media_site,
    uic_call,
)
from lab.media.peer import MediaTimeouts
from lab.media.sdp import SrtpMode
from provisioning.freeswitch_binary import freeswitch_binary


def with_audio(call: MediaCall) -> bool:
    report = call.report
    return (report.heard_hz is not None and abs(report.heard_hz - FREESWITCH_TONE_HZ) < 5
            and call.business_heard_hz is not None
            and abs(call.business_heard_hz - PEER_TONE_HZ) < 5 and report.auth_failures == 0)


async def calls_at(binary: str, count: int, folder: Path, pem: Path) -> dict[str, list[MediaCall]]:
    os.environ["WA_SIP_FREESWITCH"] = binary
    # The binary's RUNPATH names /opt/freeswitch/lib, which after install-freeswitch holds the
    # patched core: a stock install moved aside must run on its own libfreeswitch (RUNPATH, unlike
    # RPATH, yields to LD_LIBRARY_PATH), or "stock" would measure the patched core again.
    os.environ["LD_LIBRARY_PATH"] = str(Path(binary).resolve().parent.parent / "lib")
    freeswitch_binary.cache_clear()
    config = media_site(FreeswitchPorts(), folder)
    lab = FreeswitchLab(folder, config, pem)
    await asyncio.to_thread(lab.start)
    results: dict[str, list[MediaCall]] = {"SDES": [], "DTLS": []}
    try:
        controller = Controller(controller_settings(config))
        await controller.start()
        await asyncio.wait_for(controller.inbound_ready.wait(), 15)
        try:
            for _ in range(count):
                for mode, number in ((SrtpMode.SDES, SDES_NUMBER), (SrtpMode.DTLS, DTLS_NUMBER)):
                    call = await uic_call(lab, mode, number, folder, hold_s=3,
                                          timeouts=MediaTimeouts(start_s=5, mid_call_s=5))
                    print(f"  {mode.value}: {call.line()}", flush=True)
                    results[mode.value].append(call)
        finally:
            await controller.stop()
    finally:
        await asyncio.to_thread(lab.stop)
    return results


def summary(name: str, results: dict[str, list[MediaCall]]) -> dict[str, str]:
    dtls, sdes = results["DTLS"], results["SDES"]
    handshakes = [c.report.dtls_handshake_ms for c in dtls if c.report.dtls_handshake_ms is not None]
    firsts = [c.report.first_packet_after_ack_ms for c in dtls
              if c.report.first_packet_after_ack_ms is not None]
    return {
        f"{name}_dtls_audio": f"{sum(map(with_audio, dtls))}/{len(dtls)}",
        f"{name}_sdes_audio": f"{sum(map(with_audio, sdes))}/{len(sdes)}",
        f"{name}_handshake_ms_median": f"{statistics.median(handshakes):.0f}" if handshakes else "none",
        f"{name}_dtls_first_packet_ms_median": f"{statistics.median(firsts):.0f}" if firsts else "none",
        f"{name}_role_conflicts": str(sum(c.report.role_conflicts for c in dtls)),
        f"{name}_dtls_packets_received": str(sum(c.report.packets_received for c in dtls)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stock", default=os.environ.get("STOCK") or next(
        iter(sorted(glob.glob("/opt/freeswitch.unpatched-*/bin/freeswitch"))), None))
    parser.add_argument("--patched", default=os.environ.get("PATCHED") or freeswitch_binary())
    parser.add_argument("--calls", type=int, default=3)
    args = parser.parse_args()
    result: dict[str, str] = {"calls": str(args.calls)}
    with tempfile.TemporaryDirectory(prefix="bench-media-patch-") as tmp:
        pem = dtls_certificate(Path(tmp) / "dtls-srtp.pem")
        for name, binary in (("stock", args.stock), ("patched", args.patched)):
            if not binary:
                print(f"{name}: no binary given; skipped")
                continue
            print(f"{name}: {binary}", flush=True)
            folder = Path(tmp) / name
            folder.mkdir()
            result.update(summary(name, asyncio.run(calls_at(binary, args.calls, folder, pem))))
    print("RESULT " + " ".join(f"{key}={value}" for key, value in result.items()))


if __name__ == "__main__":
    main()
