"""Call detail records: built from CHANNEL_HANGUP_COMPLETE, kept in SQLite or PostgreSQL.

Why the record is built from the hangup event alone: the same event reaches the call's own
outbound socket and the controller's inbound connection, so either path can write it and a
restart or a dropped socket loses nothing once FreeSWITCH reported the end. Writes are upserts
(``COALESCE`` keeps what the other writer knew, such as time to first media), committed before
the controller moves on; WAL mode with ``synchronous=NORMAL`` survives a process crash.

With ``[esl] cdr_db`` a PostgreSQL URL every media node writes the same table (each record
names its node), and each controller keeps a heartbeat row (``esl_node``): a node whose
heartbeat stopped is lost, and the other nodes close its active calls as ``lost`` with a
diagnosis saying so, since the dead node's own controller can no longer write their end.
While that database is unreachable a write goes to the node's spool instead (esl/cdr_spool.py)
and reaches the database, in order, once it answers again (:meth:`CdrStore.replay_spool`).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from esl.cdr_spool import CdrSpool
from esl.database import DatabaseUnreachable, Location, first_line, open_database
from esl.diagnosis import EDGE_DIAGNOSIS_HEADER, diagnose
from esl.event import Event
from esl.whatsapp_call import BYE_HEADER_PREFIX, HEADER_PREFIX, clean_payload, sip_headers

log = logging.getLogger(__name__)

WriteOutcome = Literal["written", "spooled", "dropped"]
"""What became of a CDR write: in the database; kept in the spool for it (PostgreSQL
unreachable); or lost (the spool full or not writable), which the store reports."""
REPLAY_BATCH = 200
"""Spooled writes replayed per transaction: one commit each, the event loop free between."""


@dataclass(frozen=True)
class CallRecord:
    call_uuid: str
    direction: str | None = None  # "uic" or "bic"
    wacid: str | None = None
    business_number: str | None = None
    user_number: str | None = None
    tgrp: str | None = None
    trunk_context: str | None = None
    request_uri_params: str | None = None  # "k=v;k2=v2"
    cta_payload: str | None = None
    deeplink_payload: str | None = None
    route: str | None = None
    srtp_mode: str | None = None
    invite_at: str | None = None
    answer_at: str | None = None
    end_at: str | None = None
    meta_duration_s: int | None = None
    fs_duration_s: float | None = None
    hangup_cause: str | None = None
    sip_status: int | None = None
    diagnosis: str | None = None
    media_timeout: bool | None = None
    first_media_ms: float | None = None
    state: str = "active"
    """"active", "ended", "missed" (ended while the controller was not connected to FreeSWITCH)
    or "lost" (its media node died: FreeSWITCH and wa-esl gone, closed by another node)."""
    sip_call_id: str | None = None  # the SIP Call-ID (the edge logs it: wa-esl call show)
    permission: str | None = None  # BIC: the call permission pre-flight placed it under
    freeswitch_srtp_mode: str | None = None
    """Set when rtpengine anchored Meta's media: FreeSWITCH's own leg (RTP, or SDES inside),
    while ``srtp_mode`` is what Meta's side used (the number's SDES or DTLS)."""
    node: str | None = None
    """The media node (``[esl] node``) whose controller wrote the record."""


FIELDS = tuple(field.name for field in dataclasses.fields(CallRecord))


def _iso(microseconds: str | None) -> str | None:
    if not microseconds or microseconds == "0":
        return None
    try:
        moment = datetime.fromtimestamp(int(microseconds) / 1_000_000, tz=UTC)
    except (ValueError, OverflowError):
        return None
    return moment.isoformat(timespec="milliseconds")


iso_from_us = _iso
"""FreeSWITCH's epoch-microsecond times (``Caller-Channel-*-Time``) as the CDR keeps them."""


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def is_whatsapp_call(event: Event) -> bool:
    """Calls we tagged, or that carry the edge's WhatsApp headers; others are not ours."""
    if event.variable("wa_direction"):
        return True
    headers = sip_headers(event)
    return "x-wa-meta-wacid" in headers or "x-wa-business-number" in headers


def dtls_failed(event: Event, cause: str) -> bool:
    """FreeSWITCH ended a DTLS call because its DTLS association failed.

    FreeSWITCH sets no variable for it: on a failed handshake or a peer certificate that does
    not match the SDP's ``a=fingerprint`` (its log: "Fingerprint Verification Failed") the DTLS
    state machine hangs the call up with DESTINATION_OUT_OF_ORDER (switch_rtp.c,
    dtls_state_fail) before any SRTP key was installed, and ``rtp_has_crypto`` is set only when
    one is. On a DTLS leg nothing else ends a call with that cause without keys.
    """
    return (cause == "DESTINATION_OUT_OF_ORDER"
            and (event.variable("wa_srtp_mode") == "DTLS"
                 or event.variable("rtp_use_dtls") == "true")
            and not event.variable("rtp_has_crypto")
            and not (event.variable("sip_hangup_disposition") or "").startswith("recv_"))


ANCHOR = "rtpengine"
"""The anchor a record with ``freeswitch_srtp_mode`` went through."""


def srtp_text(record: CallRecord) -> str:
    """The record's SRTP as an operator reads it: Meta's side, and rtpengine when it anchored
    the call (``DTLS (rtpengine)``; FreeSWITCH's leg named when it is not plain RTP)."""
    meta = record.srtp_mode or "-"
    leg = record.freeswitch_srtp_mode
    if leg is None:
        return meta
    return f"{meta} ({ANCHOR})" if leg == "RTP" else f"{meta} ({ANCHOR}, {leg} to FreeSWITCH)"


def srtp_fields(meta_mode: str | None, leg_mode: str | None) -> tuple[str | None, str | None]:
    """(``srtp_mode``, ``freeswitch_srtp_mode``) of a record from the number's two modes
    (``wa_meta_srtp_mode``, set behind rtpengine only, and FreeSWITCH's ``wa_srtp_mode``)."""
    return (meta_mode, leg_mode) if meta_mode else (leg_mode, None)


def record_from_hangup(event: Event) -> CallRecord:
    """The complete CDR of a call from its CHANNEL_HANGUP_COMPLETE event."""
    invite = sip_headers(event, HEADER_PREFIX)
    bye = sip_headers(event, BYE_HEADER_PREFIX)
    direction = event.variable("wa_direction") or (
        "uic" if event.get("Call-Direction") == "inbound" else "bic"
    )
    if direction == "uic":
        business = invite.get("x-wa-business-number") or event.get("Caller-Destination-Number")
        user = event.get("Caller-Caller-ID-Number")
    else:
        business = event.variable("origination_caller_id_number")
        user = event.get("Caller-Destination-Number")
    cause = event.get("Hangup-Cause") or event.variable("hangup_cause") or ""
    status = _int(event.variable("sip_invite_failure_status") or event.variable("sip_term_status"))
    answered_us = event.get("Caller-Channel-Answered-Time")
    answered = bool(answered_us and answered_us != "0")
    billmsec = _int(event.variable("billmsec"))
    params = {k.removeprefix("x-wa-param-"): v for k, v in invite.items() if "x-wa-param-" in k}
    srtp_mode, freeswitch_srtp_mode = srtp_fields(event.variable("wa_meta_srtp_mode"),
                                                  event.variable("wa_srtp_mode"))
    return CallRecord(
        call_uuid=event.unique_id,
        direction=direction,
        wacid=(
            invite.get("x-wa-meta-wacid")
            or bye.get("x-wa-meta-wacid")
            or event.variable("wa_wacid")
        ),
        business_number=event.variable("wa_business_number") or business,
        user_number=event.variable("wa_user_number") or user,
        tgrp=invite.get("x-wa-tgrp"),
        trunk_context=invite.get("x-wa-trunk-context"),
        request_uri_params=";".join(f"{k}={v}" for k, v in sorted(params.items())) or None,
        cta_payload=clean_payload(invite.get("x-wa-meta-cta-payload")),
        deeplink_payload=clean_payload(invite.get("x-wa-meta-deeplink-payload")),
        route=event.variable("wa_route"),
        srtp_mode=srtp_mode,
        freeswitch_srtp_mode=freeswitch_srtp_mode,
        invite_at=_iso(event.get("Caller-Channel-Created-Time")),
        answer_at=_iso(answered_us),
        end_at=_iso(event.get("Caller-Channel-Hangup-Time")) or _iso(
            event.get("Event-Date-Timestamp")
        ),
        meta_duration_s=_int(bye.get("x-wa-meta-call-duration")),
        fs_duration_s=billmsec / 1000 if billmsec is not None else None,
        hangup_cause=cause,
        sip_status=status,
        diagnosis=diagnose(
            direction=direction,
            hangup_cause=cause,
            sip_status=status,
            sip_phrase=event.variable("sip_invite_failure_phrase") or "",
            disposition=event.variable("sip_hangup_disposition") or "",
            answered=answered,
            controller_code=event.variable("wa_diagnosis"),
            edge_header=event.variable("sip_rh_" + EDGE_DIAGNOSIS_HEADER),
            dtls_failed=dtls_failed(event, cause),
        ),
        media_timeout=cause == "MEDIA_TIMEOUT",
        state="ended",
        sip_call_id=event.variable("sip_call_id"),
        permission=event.variable("wa_permission"),
    )


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS cdr (
    call_uuid TEXT PRIMARY KEY,
    {", ".join(f"{name} {_kind}" for name, _kind in (
        ("direction", "TEXT"), ("wacid", "TEXT"), ("business_number", "TEXT"),
        ("user_number", "TEXT"), ("tgrp", "TEXT"), ("trunk_context", "TEXT"),
        ("request_uri_params", "TEXT"), ("cta_payload", "TEXT"), ("deeplink_payload", "TEXT"),
        ("route", "TEXT"), ("srtp_mode", "TEXT"), ("invite_at", "TEXT"), ("answer_at", "TEXT"),
        ("end_at", "TEXT"), ("meta_duration_s", "BIGINT"), ("fs_duration_s", "DOUBLE PRECISION"),
        ("hangup_cause", "TEXT"), ("sip_status", "BIGINT"), ("diagnosis", "TEXT"),
        ("media_timeout", "BIGINT"), ("first_media_ms", "DOUBLE PRECISION"), ("state", "TEXT"),
        ("sip_call_id", "TEXT"), ("permission", "TEXT"), ("freeswitch_srtp_mode", "TEXT"),
        ("node", "TEXT"),
    ))}
);
CREATE INDEX IF NOT EXISTS cdr_invite_at ON cdr (invite_at);
CREATE TABLE IF NOT EXISTS esl_node (
    node TEXT PRIMARY KEY,
    heartbeat_at DOUBLE PRECISION NOT NULL,
    esl_up BIGINT NOT NULL,
    esl_changed_at DOUBLE PRECISION NOT NULL
);
"""
"""SQLite and PostgreSQL alike (BIGINT and DOUBLE PRECISION have SQLite's INTEGER and REAL
affinity). ``esl_node``: each controller's heartbeat, in the database's own clock."""
_ADDED_COLUMNS = (("sip_call_id", "TEXT"), ("permission", "TEXT"),
                  ("freeswitch_srtp_mode", "TEXT"), ("node", "TEXT"))
"""Columns added after the first release: an older database gets them on open."""
_COLUMNS = ", ".join(FIELDS)
_PLACEHOLDERS = ", ".join(f":{name}" for name in FIELDS)
_MERGE = ", ".join(
    f"{name} = COALESCE(excluded.{name}, cdr.{name})" for name in FIELDS
    if name not in ("call_uuid", "node")
) + ", node = COALESCE(cdr.node, excluded.node)"
"""What another writer knew is kept; the node is the first writer's (the one that had the call)."""
_UPSERT = (
    f"INSERT INTO cdr ({_COLUMNS}) VALUES ({_PLACEHOLDERS}) "
    f"ON CONFLICT(call_uuid) DO UPDATE SET {_MERGE}"
)
LOST_CODE = "media-node-lost"


def lost_diagnosis(node: str, heartbeat_at: float) -> str:
    """The diagnosis of a call whose media node died under it (FreeSWITCH and wa-esl gone)."""
    return (f"{LOST_CODE}: media node {node} lost (no heartbeat since {epoch_iso(heartbeat_at)}); "
            "the edge ends such calls toward Meta with a BYE (Reason: SIP;cause=502;"
            "text=\"business media node lost\"); their end is Meta's (calls webhook)")


def epoch_iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class NodeStatus:
    """A media node's last heartbeat, as the database's clock saw it."""

    node: str
    heartbeat_at: float  # epoch seconds
    age_s: float  # seconds since, at the time of reading
    esl_up: bool  # its controller's inbound ESL connection to FreeSWITCH was up
    esl_changed_at: float  # when that last changed

    def lost(self, lost_after_s: float) -> bool:
        return self.age_s > lost_after_s

    def explain(self, lost_after_s: float) -> str | None:
        """Why an active call of this node may not be active any more; None when all is well."""
        if self.lost(lost_after_s):
            return (f"media node {self.node} lost (no heartbeat since "
                    f"{epoch_iso(self.heartbeat_at)}, {self.age_s:.0f} s ago)")
        if not self.esl_up:
            return (f"media node {self.node}: wa-esl is up but not connected to FreeSWITCH since "
                    f"{epoch_iso(self.esl_changed_at)} (the CDR is closed 'missed' when it "
                    "reconnects and FreeSWITCH no longer has the call)")
        return None


class CdrStore:
    """The CDR table, on SQLite or PostgreSQL (esl/database.py). One connection, used from
    the event loop's thread only.

    ``node`` names the media node this store writes for: every record it writes carries it
    (unless the record names its own), and :meth:`active_calls` is that node's.
    """

    def __init__(self, location: Location, *, node: str | None = None,
                 spool: CdrSpool | None = None, defer: bool | None = None) -> None:
        """``defer`` (default: with a spool): a PostgreSQL database unreachable now does not
        fail the open; the tables are created or checked before the first statement that
        finds it answering (esl/database.py), and until then writes are spooled and reads
        raise DatabaseUnreachable. A database that refuses this configuration (password,
        role, database name) raises DatabaseRefused here all the same."""
        self.path = location
        self.node = node
        self.spool = spool
        """Where writes go while the database is unreachable (None: such a write raises)."""
        self.defers = spool is not None if defer is None else defer
        self._episode: _SpoolEpisode | None = None
        self._db = open_database(location, application=f"wa-esl {node or ''}".strip(),
                                 defer=self.defers)
        self._db.create_schema(_SCHEMA)
        self._db.add_columns("cdr", _ADDED_COLUMNS)
        self._db.create_schema(
            "CREATE INDEX IF NOT EXISTS cdr_wacid ON cdr (wacid);"
            "CREATE INDEX IF NOT EXISTS cdr_sip_call_id ON cdr (sip_call_id);"
            "CREATE INDEX IF NOT EXISTS cdr_active ON cdr (node) WHERE state IS NULL")
        if spool is not None and len(spool):
            self._episode = _SpoolEpisode(time.monotonic())
            log.warning("CDR spool %s holds %d write(s) the CDR database %s has not taken yet "
                        "(from before wa-esl restarted): replaying them in order", spool.path,
                        len(spool), location)
        why = self._db.unreachable_at_open
        if why is not None:
            self._episode = self._episode or _SpoolEpisode(time.monotonic())
            where = (f"are kept in the spool {spool.path} (up to {spool.max_records}) and "
                     "replayed in order" if spool is not None else "fail (no spool) until")
            log.warning("CDR database %s unreachable at start (%s): starting without it; CDR "
                        "writes %s once it answers, after its tables are created or checked",
                        location, why, where)

    @property
    def shared(self) -> bool:
        """Several nodes write this database (PostgreSQL)."""
        return self._db.postgres

    def upsert(self, record: CallRecord) -> WriteOutcome:
        """Insert or merge a record; committed on return (autocommit).

        With a spool: while the database is unreachable, or writes wait in the spool (the
        database takes them in order), the write is spooled instead ("spooled"), or lost when
        the spool is full ("dropped", warned once per outage). Every other database error is
        raised: it is a bug, a retry would not cure it.
        """
        values: dict[str, object] = {name: getattr(record, name) for name in FIELDS}
        if record.state == "active":
            values["state"] = None  # never turn an ended call back into an active one
        if values["media_timeout"] is not None:
            values["media_timeout"] = int(bool(values["media_timeout"]))
        if values["node"] is None:
            values["node"] = self.node
        if self.spool is None:
            self._db.execute(_UPSERT, values)
            return "written"
        if not len(self.spool):
            try:
                self._db.execute(_UPSERT, values)
            except DatabaseUnreachable as exc:
                if self._episode is not None:  # already said (at start, or the spool full)
                    return self._spool_write(self.spool, values)
                self._episode = _SpoolEpisode(time.monotonic())
                log.warning("CDR database %s unreachable (%s): CDR writes go to the spool %s "
                            "(up to %d) and are replayed in order when it answers", self.path,
                            first_line(exc), self.spool.path, self.spool.max_records)
                return self._spool_write(self.spool, values)
            if self._episode is not None:  # the outage is over without a write left waiting
                self._finish_episode()
            return "written"
        return self._spool_write(self.spool, values)

    def _spool_write(self, spool: CdrSpool, values: dict[str, object]) -> WriteOutcome:
        episode = self._episode or _SpoolEpisode(time.monotonic())
        self._episode = episode
        try:
            if spool.append(values, time.time()):
                return "spooled"
            why = f"full ({spool.max_records} writes, [esl] cdr_spool_max_records)"
        except sqlite3.Error as exc:  # its disk full or gone: the write cannot be kept
            why = f"not writable ({exc})"
        episode.dropped += 1
        if not episode.warned_drop:
            episode.warned_drop = True
            log.warning("CDR spool %s %s: CDR writes are dropped until the CDR database %s "
                        "takes the spooled ones (each counted in "
                        "wasip_esl_cdr_spool_dropped_total; the first: call %s)", spool.path,
                        why, self.path, values["call_uuid"])
        return "dropped"

    @property
    def spooled(self) -> int:
        """Writes waiting in the spool for the database."""
        return len(self.spool) if self.spool is not None else 0

    def replay_spool(self, *, batch: int = REPLAY_BATCH) -> int:
        """Write the oldest spooled writes to the database, in order, in one transaction, and
        forget them; returns how many (0: nothing waits). Raises DatabaseUnreachable while
        the database still does not answer (nothing forgotten, the next call tries again).

        A crash between the database's commit and the spool's delete replays them once more:
        the same writes in the same order over the row leave it as it was (COALESCE merge).
        """
        if self.spool is None:
            return 0
        writes = self.spool.oldest(batch)
        if not writes:
            if self._db.unreachable_at_open is None:
                self._finish_episode()  # an outage at start that no write saw is over
            return 0
        with self._db.transaction():
            for write in writes:
                self._db.execute(_UPSERT, write.params)
        self.spool.remove_through(writes[-1].seq)
        if self._episode is not None:
            self._episode.replayed += len(writes)
        if not len(self.spool):
            self._finish_episode()
        return len(writes)

    def _finish_episode(self) -> None:
        """The spool is empty and the database took what it held: say so (once)."""
        episode, self._episode = self._episode, None
        if episode is None or self.spool is None or not (episode.replayed or episode.dropped):
            return  # nothing was spooled (an outage at start that no call saw)
        dropped = (f"; {episode.dropped} write(s) dropped while the spool was full"
                   if episode.dropped else "")
        log.warning("CDR spool %s drained: %d spooled write(s) replayed in order to the "
                    "CDR database %s, %.0f s after spooling started%s", self.spool.path,
                    episode.replayed, self.path, time.monotonic() - episode.started, dropped)

    def get(self, call_uuid: str) -> CallRecord | None:
        """The call's record as the database will hold it once the spool is replayed: the
        database's row with this node's spooled writes for the call merged over it as the
        upsert merges them. With the database unreachable, the spooled writes alone (if the
        call has any; else DatabaseUnreachable): the BIC result of a call placed during an
        outage still gets the diagnosis its hangup wrote."""
        pending = self.spool.writes_for(call_uuid) if self.spool is not None and \
            len(self.spool) else []
        try:
            rows = self._select("WHERE call_uuid = ?", (call_uuid,))
        except DatabaseUnreachable:
            if not pending:
                raise
            rows = []
        if not pending:
            return rows[0] if rows else None
        values: dict[str, object] = (dataclasses.asdict(rows[0]) if rows else
                                     {name: None for name in FIELDS})
        if rows and values["state"] == "active":
            values["state"] = None
        for write in pending:
            for name in FIELDS:
                if name == "node":
                    values[name] = values[name] or write.params.get(name)
                elif write.params.get(name) is not None:
                    values[name] = write.params[name]
        values["call_uuid"] = call_uuid
        if values["media_timeout"] is not None:
            values["media_timeout"] = bool(values["media_timeout"])
        values["state"] = values["state"] or "active"
        return CallRecord(**values)  # type: ignore[arg-type]

    def find(self, call: str) -> list[CallRecord]:
        """Records whose FreeSWITCH UUID, wacid or SIP Call-ID is ``call`` (newest first)."""
        return self._select(
            "WHERE call_uuid = ? OR wacid = ? OR sip_call_id = ? "
            "ORDER BY invite_at DESC NULLS LAST LIMIT 10", (call, call, call))

    def recent(self, *, limit: int = 100, direction: str | None = None,
               node: str | None = None) -> list[CallRecord]:
        where, args = [], []
        if direction:
            where.append("direction = ?")
            args.append(direction)
        if node:
            where.append("node = ?")
            args.append(node)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        return self._select(f"{clause}ORDER BY invite_at DESC NULLS LAST LIMIT ?",
                            (*args, limit))

    def bic_history(self, business_number: str, user_number: str, *,
                    limit: int = 50) -> list[CallRecord]:
        """The newest business-initiated calls from ``business_number`` to ``user_number``."""
        return self._select(
            "WHERE direction = 'bic' AND business_number = ? AND user_number = ? "
            "ORDER BY invite_at DESC NULLS LAST LIMIT ?", (business_number, user_number, limit))

    def _select(self, where: str, args: tuple[object, ...]) -> list[CallRecord]:
        result = self._db.execute(f"SELECT {_COLUMNS} FROM cdr {where}", args)
        records = []
        for row in result.rows:
            values = dict(zip(FIELDS, row, strict=True))
            if values["media_timeout"] is not None:
                values["media_timeout"] = bool(values["media_timeout"])
            values["state"] = values["state"] or "active"
            records.append(CallRecord(**values))
        return records

    def active_calls(self, *, limit: int = 10_000) -> list[str]:
        """UUIDs of this node's calls whose end this store has not seen yet, oldest first
        (records without a node, from before nodes were recorded, count as this node's)."""
        if self.node is None:
            result = self._db.execute(
                "SELECT call_uuid FROM cdr WHERE state IS NULL ORDER BY invite_at LIMIT ?",
                (limit,))
        else:
            result = self._db.execute(
                "SELECT call_uuid FROM cdr WHERE state IS NULL AND (node = ? OR node IS NULL) "
                "ORDER BY invite_at LIMIT ?", (self.node, limit))
        return [row[0] for row in result.rows]

    def mark_missed(self, call_uuid: str, diagnosis: str) -> None:
        """Close a call that ended while no connection saw its hangup; its end is unknown.

        Only an active row changes: a hangup event that arrives later still wins (upsert).
        """
        self._db.execute(
            "UPDATE cdr SET state = 'missed', diagnosis = COALESCE(diagnosis, ?) "
            "WHERE call_uuid = ? AND state IS NULL",
            (diagnosis, call_uuid),
        )

    # ---- media nodes: heartbeats, and the calls of a node that died -----------------------

    def heartbeat(self, *, esl_up: bool) -> None:
        """This node is alive (and whether its controller is connected to FreeSWITCH)."""
        if self.node is None:
            raise ValueError("heartbeat needs the store's node")
        now = self._db.now_epoch
        self._db.execute(
            f"INSERT INTO esl_node (node, heartbeat_at, esl_up, esl_changed_at) "
            f"VALUES (?, {now}, ?, {now}) ON CONFLICT(node) DO UPDATE SET "
            "heartbeat_at = excluded.heartbeat_at, esl_up = excluded.esl_up, "
            "esl_changed_at = CASE WHEN esl_node.esl_up = excluded.esl_up "
            "THEN esl_node.esl_changed_at ELSE excluded.esl_changed_at END",
            (self.node, int(esl_up)))

    def nodes(self) -> dict[str, NodeStatus]:
        """Every node that ever sent a heartbeat, with the age of its last one."""
        result = self._db.execute(
            f"SELECT node, heartbeat_at, {self._db.now_epoch} - heartbeat_at, esl_up, "
            "esl_changed_at FROM esl_node")
        return {row[0]: NodeStatus(row[0], float(row[1]), float(row[2]), bool(row[3]),
                                   float(row[4])) for row in result.rows}

    def close_lost_calls(self, lost_after_s: float) -> list[CallRecord]:
        """Close the active calls of every other node whose heartbeat stopped ``lost_after_s``
        ago: state 'lost', the diagnosis naming the node and its last heartbeat, and the end
        Meta reported (its ``terminate`` webhook) when the receiver stored one.

        Whoever runs it first closes a call (the UPDATE is conditional); a hangup event the
        node writes later, if it was only cut off from the database, still wins (upsert).
        Returns the records closed by this call.
        """
        lost = {name: status for name, status in self.nodes().items()
                if name != self.node and status.lost(lost_after_s)}
        if not lost:
            return []
        marks = ", ".join("?" * len(lost))
        rows = self._db.execute(
            f"SELECT call_uuid, node, wacid FROM cdr WHERE state IS NULL AND node IN ({marks})",
            tuple(lost)).rows
        closed = []
        for call_uuid, node, wacid in rows:
            end_at = self._meta_end(wacid) if wacid else None
            changed = self._db.execute(
                "UPDATE cdr SET state = 'lost', diagnosis = ?, end_at = COALESCE(end_at, ?) "
                "WHERE call_uuid = ? AND state IS NULL",
                (lost_diagnosis(node, lost[node].heartbeat_at), end_at, call_uuid)).rowcount
            if changed:
                record = self.get(call_uuid)
                if record is not None:
                    closed.append(record)
        return closed

    def _meta_end(self, wacid: str) -> str | None:
        if not self._db.has_table("meta_call_event"):
            return None
        rows = self._db.execute("SELECT end_time FROM meta_call_event WHERE wacid = ? AND "
                                "event = 'terminate' AND end_time IS NOT NULL", (wacid,)).rows
        return epoch_iso(rows[0][0]) if rows else None

    def close(self) -> None:
        self._db.close()
        if self.spool is not None:
            self.spool.close()


@dataclass
class _SpoolEpisode:
    """One stretch of writes going to the spool: for its two WARNING lines (start, drained)."""

    started: float  # time.monotonic()
    replayed: int = 0
    dropped: int = 0
    warned_drop: bool = False
