"""A business media node of the cluster lab as the product runs one: FreeSWITCH rendered by
`provision render` (provisioning/render_freeswitch.py) and `wa-esl run`, both inside the node's
namespace, where a FreeSWITCH is installed (provisioning/freeswitch_binary.py finds it).

The node's site config is the edge's (the same numbers, sets and [media] anchor = "rtpengine", so
FreeSWITCH's profile is the plain-RTP one) with FreeSWITCH's profile on the node's address and
port 5080, SIP allowed from both edges, its Event Socket and wa-esl's socket server on the
namespace's own loopback, and [esl] cdr_db = the site's PostgreSQL with a `node` of its own, so
every node's CDRs are in one database and a dead node's calls are closed `lost` by the other.
A route plays the business's tone (BUSINESS_TONE_HZ, the plain side's) on every call.

What the drills ask of a business node (did it get the call, did Meta's BYE reach it, from
where) is read from FreeSWITCH's own SIP trace (lab/freeswitch_trace.py, turned on at start), not
from the CDR database, so it holds while the PostgreSQL drill has the database stopped; what
reached its RTP port and when, from a packet capture in its namespace (lab/cluster/rtp_capture.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from esl.cdr import CallRecord, CdrStore
from lab.bundle import WaEsl, wa_esl_command
from lab.cluster.business_node import BUSINESS_TONE_HZ
from lab.cluster.edge_node import BUSINESS_PORT
from lab.cluster.rtp_capture import RtpCapture
from lab.cluster.topology import Node, inside
from lab.edge import merge
from lab.freeswitch import FreeswitchLab
from lab.freeswitch_trace import TRACE_COMMANDS, header, read_freeswitch_trace
from lab.processes import LabError
from lab.sipp import TracedMessage
from lab.site_toml import write_site_toml
from provisioning.freeswitch_binary import freeswitch_binary, freeswitch_missing
from siteconfig.model import SiteConfig

ESL_PASSWORD = "lab-Cluster-Esl-7"
# in the nodes' [esl] cdr_db URL as a site's would hold one; the lab's PostgreSQL trusts the
# site's segment, so it is never asked for: there so the drills can check no log shows it
CDR_DB_PASSWORD = "lab-Cluster-Cdr-8"
NODE_LOST_AFTER_S = 6  # wa-esl's minimum is 3; a heartbeat every 2 s
HEARTBEAT_S = NODE_LOST_AFTER_S / 3
TONE = f"tone_stream://%(1000,0,{BUSINESS_TONE_HZ:g});loops=-1"
_AUDIO_PORT = re.compile(r"^m=audio (\d+) ", re.MULTILINE)
_OPUS_PT = re.compile(r"^a=rtpmap:(\d+) opus/48000", re.MULTILINE | re.IGNORECASE)


def freeswitch_choice() -> tuple[str | None, str]:
    """The FreeSWITCH binary the media nodes run (None: the plain SIP/RTP side) and a line
    saying which and why, as `make lab` prints it."""
    missing = freeswitch_missing()
    if missing is not None:
        return None, (f"business media nodes: the lab's plain SIP/RTP side "
                      f"(lab/cluster/business_node.py), no FreeSWITCH: {missing}")
    binary = freeswitch_binary()
    return binary, (f"business media nodes: FreeSWITCH ({binary}) + wa-esl run each, CDRs in "
                    f"the site's PostgreSQL, node_lost_after_s = {NODE_LOST_AFTER_S}")


def media_node_overrides(node: Node, edges: list[Node], store_url: str,
                         folder: Path) -> dict[str, Any]:
    """The changes to the edge's site config that make it media node `node`'s (`folder`: the
    node's own, for the CDR spool: both nodes run on one host)."""
    return {
        "freeswitch": {"profile": {
            "sip_ip": node.address, "rtp_ip": node.address, "sip_port": BUSINESS_PORT,
            "edge_networks": [f"{edge.address}/32" for edge in edges]}},
        "esl": {
            "freeswitch": {"host": "127.0.0.1", "port": 8021, "password": ESL_PASSWORD},
            "listen": {"host": "127.0.0.1", "port": 8084},
            "cdr_db": store_url.replace("@", f":{CDR_DB_PASSWORD}@", 1),
            "cdr_spool": str(folder / "cdr-spool.sqlite3"),
            "node": node.role, "node_lost_after_s": NODE_LOST_AFTER_S,
            "reconnect": {"initial_s": 0.1, "max_s": 1.0},
            "routes": [{"name": "cluster-tone", "target": {"action": "ivr",
                                                           "destination": f"playback {TONE}"}}]},
    }


class FreeswitchMediaNode:
    """FreeSWITCH + wa-esl of one media node; `kill()` is the node dying (both SIGKILLed)."""

    def __init__(self, node: Node, folder: Path, raw_config: dict[str, Any],
                 dtls_pem: Path) -> None:
        self.node = node
        self.folder = folder
        self.raw_config = raw_config
        self.config = SiteConfig.model_validate(raw_config)
        self.config_file = folder / "site.toml"
        self.freeswitch = _NamespacedFreeswitch(node, folder / "freeswitch", self.config, dtls_pem)
        self.wa_esl: WaEsl | None = None
        self.wa_esl_runs: list[WaEsl] = []  # every wa-esl this node ran, in order
        self.starts = 0
        self.capture = RtpCapture(node, BUSINESS_PORT)  # for the node's life, restarts too

    @property
    def log(self) -> Path:
        return self.freeswitch.log

    def start(self) -> FreeswitchMediaNode:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_site_toml(self.config_file, self.raw_config)
        self.starts += 1
        self.freeswitch.start()
        for command in TRACE_COMMANDS:
            self.freeswitch.api(command)
        self._start_wa_esl()
        return self

    def _start_wa_esl(self) -> WaEsl:
        """`wa-esl run` in the node's namespace, a log of its own per run; ready on return."""
        runs = len(self.wa_esl_runs) + 1
        self.wa_esl = WaEsl(self.config_file, self.folder / f"wa-esl-{self.starts}-{runs}.log")
        self.wa_esl.argv = self.node.argv(*self.wa_esl.argv)
        self.wa_esl_runs.append(self.wa_esl)
        self.wa_esl.start()
        self.wa_esl.wait_ready()
        return self.wa_esl

    def restart_wa_esl(self, timeout_s: float) -> tuple[int, float]:
        """wa-esl alone restarted, FreeSWITCH left running, as systemd restarts its unit:
        SIGTERM, its exit waited for (`timeout_s`), then started again as `start` starts it.
        Its exit code and the seconds from the SIGTERM until the new one is ready."""
        assert self.wa_esl is not None and self.wa_esl.pid is not None
        began = time.monotonic()
        os.killpg(self.wa_esl.pid, signal.SIGTERM)
        code = self.wa_esl.wait(timeout_s)
        self._start_wa_esl()
        return code, time.monotonic() - began

    def wa_esl_text(self, mark: tuple[int, int]) -> str:
        """What wa-esl logged since `mark` (`wa_esl_mark()`), over its restarts."""
        run, offset = mark
        texts = [wa_esl.text() for wa_esl in self.wa_esl_runs[run:]]
        return texts[0][offset:] + "".join(texts[1:]) if texts else ""

    def wa_esl_mark(self) -> tuple[int, int]:
        """Where wa-esl's log is now: its run and the offset in that run's log."""
        assert self.wa_esl is not None
        return len(self.wa_esl_runs) - 1, self.wa_esl.log_size()

    def wa_esl_offset(self, mark: tuple[int, int]) -> int:
        """`mark`'s offset in the current run's log (0: the run started after the mark)."""
        run, offset = mark
        return offset if run == len(self.wa_esl_runs) - 1 else 0

    def stop(self) -> None:
        if self.wa_esl is not None:
            self.wa_esl.stop()
        self.freeswitch.stop()

    def close(self) -> None:
        """The packet capture closed (after `stop`)."""
        self.capture.close()

    def kill(self) -> None:
        """The node's host dying: FreeSWITCH and wa-esl SIGKILLed, no hangup, no CDR written."""
        self.freeswitch.kill()
        if self.wa_esl is not None:
            self.wa_esl.kill()

    def running(self) -> bool:
        return self.freeswitch.running()

    # ---- what the node saw ----------------------------------------------------------------

    def messages(self) -> list[TracedMessage]:
        """Every SIP message in FreeSWITCH's trace, every start of it (one log, appended)."""
        return read_freeswitch_trace(self.log)

    def saw(self, wacid: str, answered_at: float | None = None) -> dict[str, dict[str, Any]]:
        """The node's view of one call, as the plain side logs it: {"invite": {...}} once its
        INVITE arrived, {"bye": {"source": HOST:PORT}} once a BYE for it arrived, with the
        `arrivals` of Meta's audio at FreeSWITCH's port when `answered_at` (Meta's answer,
        monotonic) says from when."""
        messages = self.messages()
        invite = next((m for m in messages if not m.sent
                       and m.text.startswith("INVITE ")
                       and header(m, "X-WA-Meta-Wacid") == wacid), None)
        if invite is None:
            return {}
        call_id = header(invite, "Call-ID")
        seen: dict[str, dict[str, Any]] = {
            "invite": {"wacid": wacid, "call_id": call_id, "source": invite.peer}}
        bye = next((m for m in messages if not m.sent and m.text.startswith("BYE ")
                    and header(m, "Call-ID") == call_id), None)
        if bye is not None:
            seen["bye"] = {"wacid": wacid, "call_id": call_id, "source": bye.peer}
            media = self.media_port(messages, call_id)
            if media is not None and answered_at is not None:
                arrivals = self.capture.call_media(*media, answered_at)
                if arrivals is not None:
                    seen["bye"]["arrivals"] = arrivals.to_json()
        return seen

    def heard_hz(self, wacid: str, answered_at: float) -> float | None:
        """The tone of Meta's audio at FreeSWITCH's port for the call (None: none heard)."""
        messages = self.messages()
        invite = next((m for m in messages if not m.sent and m.text.startswith("INVITE ")
                       and header(m, "X-WA-Meta-Wacid") == wacid), None)
        media = self.media_port(messages, header(invite, "Call-ID")) if invite else None
        return self.capture.heard_hz(*media, answered_at) if media is not None else None

    @staticmethod
    def media_port(messages: list[TracedMessage], call_id: str) -> tuple[int, int] | None:
        """FreeSWITCH's RTP port and Opus payload type for the call: its answer's SDP."""
        for message in messages:
            if (message.sent and message.text.startswith("SIP/2.0 200 ")
                    and header(message, "Call-ID") == call_id
                    and "INVITE" in header(message, "CSeq")):
                port, opus = _AUDIO_PORT.search(message.text), _OPUS_PT.search(message.text)
                if port and opus:
                    return int(port[1]), int(opus[1])
        return None

    # ---- the site's CDRs, as this node's wa-esl sees them ------------------------------------

    def records(self, wacids: set[str]) -> dict[str, CallRecord]:
        """The CDRs of these calls in the site's database (read from this node's namespace)."""
        with inside(self.node):
            store = CdrStore(self.config.esl.cdr_db)
            try:
                found = {r.wacid: r for r in store.recent(limit=500) if r.wacid in wacids}
            finally:
                store.close()
        return {wacid: record for wacid, record in found.items() if wacid is not None}

    def call_show(self, call: str) -> str:
        """`wa-esl call show CALL --config FILE` as an operator types it on this node."""
        done = subprocess.run(self.node.argv(*wa_esl_command(), "call", "show", call,
                                             "--config", str(self.config_file)),
                              capture_output=True, text=True, timeout=30, check=False)
        return (done.stdout + done.stderr).strip()


class _NamespacedFreeswitch(FreeswitchLab):
    """lab/freeswitch.py's FreeSWITCH, started and asked inside the node's namespace."""

    def __init__(self, node: Node, folder: Path, config: SiteConfig, dtls_pem: Path) -> None:
        super().__init__(folder, config, dtls_pem)
        self.node = node

    def argv(self) -> list[str]:
        return self.node.argv(*super().argv())

    def start(self) -> None:
        with inside(self.node):
            super().start()

    def api(self, command: str, *, timeout: float = 10.0) -> str:
        with inside(self.node):
            return super().api(command, timeout=timeout)


def node_config(edge_raw: dict[str, Any], node: Node, edges: list[Node],
                store_url: str, folder: Path) -> dict[str, Any]:
    """`edge_raw` (the edge's site config, as validated) made media node `node`'s."""
    raw = merge(edge_raw, media_node_overrides(node, edges, store_url, folder))
    try:
        SiteConfig.model_validate(raw)
    except ValueError as error:
        raise LabError(f"media node {node.role}'s site config: {error}") from None
    return raw
