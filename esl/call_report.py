"""One call explained from what we keep: the edge's call lines, the CDR, the media figures.

Answers the three questions an operator asks about a call that went wrong: did Meta's INVITE
reach the edge (when, from where, authenticated how), what was answered (by the edge or by
FreeSWITCH, with the diagnosis), and did media flow (first media, media timeout, durations).
The id may be a wacid, a SIP Call-ID or a FreeSWITCH UUID: each source is searched by all.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esl.cdr import CallRecord, CdrStore, srtp_text
from esl.edge_log import EdgeEvent, events_for
from esl.meta_call_events import MetaCallEventStore, Reconciliation, reconcile, without_cdr
from esl.preflight import permission_words

MEDIA_FIELDS = ("first_media_ms", "media_timeout", "fs_duration_s", "meta_duration_s")


@dataclass(frozen=True)
class CallReport:
    call: str
    edge_events: list[EdgeEvent] = field(default_factory=list)
    records: list[CallRecord] = field(default_factory=list)
    edge_logs: tuple[Path, ...] = ()
    meta: list[Reconciliation] = field(default_factory=list)
    """Meta's ``terminate`` event beside each record that has one (``wa-esl webhook``)."""
    node_notes: dict[str, str] = field(default_factory=dict)
    """Per active record (by UUID): why its node may no longer have it (heartbeat stopped, or
    wa-esl up without FreeSWITCH), from the node's heartbeat in the CDR database."""

    @property
    def found(self) -> bool:
        return bool(self.edge_events or self.records or self.meta)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``--json``): stable keys, None where we know nothing."""
        return {
            "id": self.call,
            "edge": [dict(e.fields) for e in self.edge_events],
            "cdr": [dataclasses.asdict(r) for r in self.records],
            "media": [{name: getattr(r, name) for name in MEDIA_FIELDS} for r in self.records],
            "edge_logs": [str(p) for p in self.edge_logs],
            "meta": [dataclasses.asdict(m) for m in self.meta],
            "node_status": dict(self.node_notes),
        }


def build_report(call: str, store: CdrStore | None, edge_logs: tuple[Path, ...],
                 *, duration_tolerance_s: int = 6, node_lost_after_s: int = 15) -> CallReport:
    """Search the CDR by every id, then the edge log by the ids the CDR adds (and the id).

    Meta's own account (its ``terminate`` webhook, stored by ``wa-esl webhook`` in the same
    database) is compared with each record here, whichever of the two arrived first.
    """
    records = store.find(call) if store is not None else []
    ids = {call}
    for record in records:
        ids.update(i for i in (record.wacid, record.sip_call_id) if i)
    events = events_for(edge_logs, ids) if edge_logs else []
    if store is not None and not records:
        # Asked by Call-ID or wacid the CDR lacks: the edge line may name the wacid.
        more = {e.get("wacid") for e in events} - {None, call}
        for other in more:
            records += store.find(other or "")
    meta = []
    if store is not None:
        # A wacid no CDR has (asked for directly, or named by the edge): Meta's event alone.
        unmatched = ({call} | {e.get("wacid") or "" for e in events}) - {""} - \
            {r.wacid for r in records}
        meta = _reconciliations(store, records, sorted(unmatched), duration_tolerance_s)
    notes = _node_notes(store, records, node_lost_after_s) if store is not None else {}
    return CallReport(call, events, records, edge_logs, meta, notes)


def _node_notes(store: CdrStore, records: list[CallRecord], lost_after_s: int) -> dict[str, str]:
    """An active call's CDR is only as current as its node: say when that node stopped
    (no heartbeat: the whole node is gone) or lost FreeSWITCH (wa-esl alive, ESL down)."""
    active = [r for r in records if r.state == "active" and r.node]
    if not active:
        return {}
    nodes = store.nodes()
    notes = {}
    for record in active:
        status = nodes.get(record.node or "")
        note = status.explain(lost_after_s) if status is not None else None
        if note is not None:
            notes[record.call_uuid] = note
    return notes


def _reconciliations(store: CdrStore, records: list[CallRecord], unmatched: list[str],
                     tolerance_s: int) -> list[Reconciliation]:
    events = MetaCallEventStore(store.path)
    try:
        found = [reconcile(r, events.for_wacid(r.wacid), tolerance_s) for r in records if r.wacid]
        found += [without_cdr(wacid, events.for_wacid(wacid)) for wacid in unmatched]
        return [m for m in found if m is not None]
    finally:
        events.close()


def report_lines(report: CallReport) -> list[str]:
    """The human form: one block per question, plain text (no markup from call data)."""
    lines = [f"call {report.call}"]
    lines.append("edge (Kamailio):")
    if not report.edge_logs:
        lines.append("  no edge log given (--edge-log or [esl] edge_log)")
    elif not report.edge_events:
        lines.append("  no call line in " + ", ".join(str(p) for p in report.edge_logs))
    for event in report.edge_events:
        fields = dict(event.fields)
        what = fields.pop("event", "?")
        at = fields.pop("at", "?")
        direction = fields.pop("direction", "?")
        rest = " ".join(f"{k}={v}" for k, v in fields.items())
        lines.append(f"  {at} {direction} {what}: {rest}")
    lines.append("FreeSWITCH (CDR):")
    if not report.records:
        lines.append("  no CDR for this call")
    for r in report.records:
        lines.append(f"  uuid {r.call_uuid} {r.direction or '?'} state {r.state} "
                     f"node {r.node or '-'}")
        if r.call_uuid in report.node_notes:
            lines.append(f"  node: {report.node_notes[r.call_uuid]}")
        lines.append(f"  invite {r.invite_at or '-'}  answer {r.answer_at or '-'}  "
                     f"end {r.end_at or '-'}")
        lines.append(f"  hangup {r.hangup_cause or '-'}  sip {r.sip_status or '-'}  "
                     f"route {r.route or '-'}  srtp {srtp_text(r)}")
        lines.append(f"  diagnosis: {r.diagnosis or '-'}")
        if r.direction == "bic":
            lines.append(f"  permission: {permission_words(r.permission)}")
    lines.append("media:")
    for r in report.records:
        first = f"{r.first_media_ms:.0f} ms after answer" if r.first_media_ms is not None \
            else "not recorded"
        timeout = {True: "yes", False: "no", None: "unknown"}[r.media_timeout]
        duration = f"{r.fs_duration_s:.1f} s" if r.fs_duration_s is not None else "-"
        lines.append(f"  first media sent {first}; media timeout {timeout}; "
                     f"FreeSWITCH {duration}, Meta {r.meta_duration_s or '-'} s")
    if not report.records:
        lines.append("  no figures (no CDR)")
    if report.meta:
        lines.append("Meta (calls webhook):")
    for m in report.meta:
        duration = f"{m.meta_duration_s} s" if m.meta_duration_s is not None else "-"
        lines.append(f"  {m.wacid} terminate {m.meta_status or '-'}, duration {duration}")
        for problem in m.mismatches:
            lines.append(f"  MISMATCH: {problem}")
        if not m.cdr and not m.mismatches:
            lines.append("  no CDR of ours: the call ended at Meta before reaching FreeSWITCH "
                         "(or its CDR is not written yet)")
        elif not m.mismatches:
            lines.append("  agrees with our CDR")
    return lines
