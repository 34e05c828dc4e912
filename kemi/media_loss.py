"""A business media node lost mid-call: what the edge keeps of each answered user-initiated call
so that it can tell Meta with a BYE when the dispatcher's probe marks that node down.

Why a record per answered call (and not the dialog module): the edge keeps no dialog state for
user-initiated calls (the Record-Route MAC, kemi/dialog_mac.py, is all Meta's in-dialog requests
need), and when the node is gone nothing else on the site can end the call toward Meta: the
node's own BYE never comes, rtpengine's timeout has no SIP side, Meta would keep the call until
its own media timeout. So on the 200 OK the edge writes one small htable entry (wa_calls, key
`node|Call-ID`, expiring after the longest call, removed on the call's BYE), holding only what a
BYE from the business side toward Meta needs; the dispatcher's dst-down event walks the table
for that node. The table is this edge's own, never replicated, even with [cluster]: the edge
that relayed the 200 is the one that sends the BYE (one BYE per call, without the edges agreeing
on anything at the fault), and a copy on a peer would cost two DMQ messages of every call (the
set at the 200, the removal at the BYE: two of the three a cluster call cost, bench/README.md)
for a record the peer never uses. What the peers need is the rare removal: a BYE of a
user-initiated call that reaches another edge (after an edge loss, or when Meta's resolver
picks the other address) finds no record there, and that edge broadcasts the key to its peers
(one KDMQ to FORGET_PEER, `forget_key` checks it on the way in); the edge that has the record
removes it. An edge killed or restarted loses its records, and the BYEs a node loss would
have sent for them: no loss against a replicated table, whose peer copies were never sent by
the peers (one BYE per call) nor by the restarted edge (another process).

A call the node answered after the failed probe was sent is not ended (lost_with_node): in the
cluster lab a restarted node was marked down again by a probe sent while it was dead, which
without this check ended the calls it had just taken.

The BYE is a request of the callee's side of the dialog: From is the 200's To (the business's
tag), To the 200's From (Meta's tag), the Request-URI Meta's Contact, the route set Meta's own
Record-Route entries of the INVITE in the order received (a UAS keeps them unreversed; the
edge's own entries are not in the INVITE as received), sent over the connection Meta's INVITE
came on (its source address, the socket it reached). The callee side's CSeq is one the
business never used: WhatsApp calls carry no re-INVITE, and a business BYE would have ended the
call, so the INVITE's number + 1 is safe in practice (any number is valid for a first request
of that side).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from kemi.decisions import next_hop_address

TABLE = "wa_calls"
REASON = 'SIP;cause=502;text="business media node lost"'
MAX_FIELD = 2048  # a value longer than this is not Meta's: no record rather than a huge one
FORGET_PEER = "wa_calls_forget"  # the DMQ peer name (R-URI user) of a peer edge's removal
MAX_KEY = 300 + MAX_FIELD  # node_key (an address and a port) + "|" + a Call-ID


@dataclass(frozen=True)
class CallRecord:
    """What a BYE toward Meta needs of one answered call."""

    call_id: str
    meta_contact: str  # the Request-URI
    meta_routes: str  # Meta's Record-Route entries of the INVITE, comma-separated, as received
    callee_from: str  # the 200's To header (the business's tag)
    callee_to: str  # the 200's From header (Meta's tag)
    cseq: int
    meta_source: str  # sip:IP:PORT;transport=... where Meta's INVITE came from
    socket: str  # proto:IP:PORT, the edge socket Meta's INVITE reached
    answered_at: float = 0.0  # time.time() of the 200

    def encode(self) -> str:
        # vars(), not dataclasses.asdict: the same dict (fields in order, all plain values)
        # without asdict's recursive deep copy (about 12 us of each answered call's 200)
        return json.dumps(vars(self), separators=(",", ":"))


def node_key(node_uri_or_hostport: str) -> str:
    """host:port of a business node, from a SIP URI (dispatcher's) or a host:port (a source)."""
    text = node_uri_or_hostport.strip()
    if not text.lower().startswith(("sip:", "sips:")):
        text = f"sip:{text}"
    host, port, _ = next_hop_address(text)
    return f"{host.strip('[]').lower()}:{port}"


def record_key(node: str, call_id: str) -> str:
    return f"{node_key(node)}|{call_id}"


def forget_key(body: str) -> str | None:
    """The record key a peer edge's FORGET_PEER message names, None unless it is one
    (`host:port|Call-ID`, no longer than a record's key can be, no line break)."""
    node, bar, call_id = body.partition("|")
    if not bar or not node or not call_id or len(body) > MAX_KEY or "\n" in body \
            or "\r" in body or ":" not in node:
        return None
    return body


def answered_call(call_id: str, meta_contact: str, meta_routes: str, reply_from: str,
                  reply_to: str, invite_cseq: str, meta_source: str, socket: str,
                  answered_at: float = 0.0) -> CallRecord | None:
    """The record of a call the business answered (the 200's From/To, the INVITE's CSeq
    header value); None when something a BYE needs is missing or too long."""
    fields = (call_id, meta_contact, reply_from, reply_to, meta_source, socket)
    if not all(fields) or any(len(f) > MAX_FIELD for f in (*fields, meta_routes)):
        return None
    if ";tag=" not in reply_to.lower() or ";tag=" not in reply_from.lower():
        return None
    number = invite_cseq.strip().split(" ", 1)[0]
    if not number.isdigit():
        return None
    return CallRecord(call_id, meta_contact, meta_routes, callee_from=reply_to,
                      callee_to=reply_from, cseq=int(number) + 1, meta_source=meta_source,
                      socket=socket, answered_at=answered_at)


def meta_side_value(contact: str, routes: str, source: str, socket: str) -> str:
    """What answered_call needs of Meta's INVITE, as one text for one AVP (JSON: a header
    value may hold any character, a separator of ours included)."""
    return json.dumps([contact, routes, source, socket])


def meta_side(value: object) -> tuple[str, str, str, str]:
    """meta_side_value's four texts back; empty ones when `value` is not one (no AVP: the
    record is then refused as incomplete)."""
    try:
        fields = json.loads(value) if isinstance(value, str) else None
    except ValueError:
        fields = None
    if not isinstance(fields, list) or len(fields) != 4 \
            or not all(isinstance(f, str) for f in fields):
        return "", "", "", ""
    return fields[0], fields[1], fields[2], fields[3]


def lost_with_node(record: CallRecord, now: float, probe_timeout_s: float) -> bool:
    """Did the failed probe say anything about this call? Not when the node answered the call
    after that probe was sent (`now - probe_timeout_s`): the node was alive then, and the
    failure is a stale probe's (one sent while the node was down or restarting, timing out
    after it came back; several are in flight when the timeout exceeds the interval). Such a
    call is left up, its record kept; a call answered in the last instant before a real loss is
    missed the same way (the node's next dst-down is after it comes back)."""
    return record.answered_at < now - probe_timeout_s


def decode(value: str) -> CallRecord | None:
    try:
        raw = json.loads(value)
        return CallRecord(**raw) if isinstance(raw, dict) else None
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class ByeRequest:
    """KSR.tm.t_uac_send's arguments: method, Request-URI, next hop, socket, headers."""

    ruri: str
    next_hop: str
    socket: str
    headers: str


def bye_toward_meta(record: CallRecord, reason: str = REASON) -> ByeRequest:
    lines = [f"From: {record.callee_from}", f"To: {record.callee_to}",
             f"Call-ID: {record.call_id}", f"CSeq: {record.cseq} BYE", "Max-Forwards: 70"]
    if record.meta_routes:
        lines.append(f"Route: {record.meta_routes}")
    lines.append(f"Reason: {reason}")
    return ByeRequest(record.meta_contact, record.meta_source, record.socket,
                      "".join(f"{line}\r\n" for line in lines))
