"""A business media node of the cluster lab: the plain SIP/RTP business side (as a stock
FreeSWITCH behind rtpengine), one process inside its node's namespace so a drill can kill it.

`python -m lab.cluster.business_node ADDRESS PORT` answers the dispatcher's OPTIONS probes
200, and every INVITE with a plain-RTP party of its own (lab/media/plain_peer.py) sending a tone
(lab/media/sip_uas.py's answering logic, one UAS per Call-ID on the one port). It prints one
JSON line per event: {"event": "invite"|"bye", "call_id", "wacid", ...}; the lab reads them
(the BYE's line with when Meta's audio arrived: lab/cluster/media_gaps.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from typing import cast

from lab.cluster.media_gaps import MeasuredPlainPeer
from lab.media.sip_uac import SipMessage, parse_message
from lab.media.sip_uas import SipUas

BUSINESS_TONE_HZ = 700.0


def event(name: str, **fields: object) -> None:
    print(json.dumps({"event": name, **fields}), flush=True)


class BusinessNode(asyncio.DatagramProtocol):
    def __init__(self, address: str, port: int) -> None:
        self.local = (address, port)
        self.transport: asyncio.DatagramTransport | None = None
        self.calls: dict[str, SipUas[MeasuredPlainPeer]] = {}
        self.opening: set[str] = set()
        self.bye_sources: dict[str, str] = {}  # Call-ID -> where the BYE came from
        self.tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse_message(data)
        except ValueError:
            return
        call_id = message.header("Call-ID") or ""
        if message.status is None and message.first_line.startswith("OPTIONS "):
            self._ok(message, addr)
            return
        if call_id in self.calls:
            if message.status is None and message.first_line.startswith("BYE "):
                self.bye_sources[call_id] = f"{addr[0]}:{addr[1]}"
            self.calls[call_id].datagram_received(data, addr)
        elif message.first_line.startswith("INVITE ") and call_id not in self.opening:
            self.opening.add(call_id)
            self._spawn(self._new_call(call_id, data, addr))

    def _spawn(self, work: object) -> None:
        assert asyncio.iscoroutine(work)
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _new_call(self, call_id: str, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        peer = MeasuredPlainPeer(tone_hz=BUSINESS_TONE_HZ, address=self.local[0])
        await peer.open()
        uas = SipUas(self.local, peer).attach(self.transport)
        self.calls[call_id] = uas
        self.opening.discard(call_id)
        uas.datagram_received(data, addr)
        wacid = (uas.invite.header("x-wa-meta-wacid") if uas.invite else None) or ""
        event("invite", call_id=call_id, wacid=wacid, status=uas.final_status,
              source=f"{addr[0]}:{addr[1]}")
        await uas.ended.wait()
        report = await peer.close()
        event("bye", call_id=call_id, wacid=wacid, packets_received=report.packets_received,
              heard_hz=report.heard_hz, source=self.bye_sources.pop(call_id, ""),
              arrivals=peer.arrivals.to_json())
        del self.calls[call_id]

    def _ok(self, request: SipMessage, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        lines = ["SIP/2.0 200 OK"]
        lines += [f"{k}: {v}" for k, v in request.headers
                  if k.lower() in ("via", "from", "to", "call-id", "cseq")]
        reply = "\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n"
        self.transport.sendto(re.sub(r"(?m)^(To: [^\r\n;]*)$", r"\1;tag=node", reply).encode(),
                              addr)


async def serve(address: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: BusinessNode(address, port),
                                        local_addr=(address, port))
    event("listening", address=address, port=port)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("port", type=int)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.address, args.port))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
