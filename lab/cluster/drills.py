"""The cluster lab's failure drills, each bounded in time: calls up when the fault strikes, the
fault, what became of those calls, and new calls until one is good (or the drill's budget ends).

Each drill returns a `DrillReport`: calls placed, calls lost (placed and not good: the ones up
at the fault count lost when the business never heard Meta's BYE, new ones when not good), the
time from the fault to the first good call, and one check per promise the drill tests. Every
drill leaves the site as it found it (the node restarted, probes green again).
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from esl.database import PG_RETRY_AFTER_S
from lab.cluster.business_node import BUSINESS_TONE_HZ
from lab.cluster.edge_node import INTERNAL_PORT, NG_LISTEN, PROBE_INTERVAL_S
from lab.cluster.freeswitch_node import (
    ESL_PASSWORD,
    HEARTBEAT_S,
    NODE_LOST_AFTER_S,
    FreeswitchMediaNode,
)
from lab.cluster.media_failover import MEDIA_ADDRESSES, REDIS_DBS, take_over
from lab.cluster.media_gaps import GAP_S, Arrivals
from lab.cluster.meta import META_TONE_HZ, MetaCall, mac_key_id
from lab.cluster.site import EDGES, REPO, ClusterSite
from lab.cluster.topology import inside
from lab.media.sdp import SrtpMode
from lab.processes import LabError
from lab.site_toml import write_site_toml
from provisioning.in_dialog_keys import rotate_key_file
from provisioning.kamailio_rpc import RpcError, call
from provisioning.rtpengine_ng import NgError, call_ids
from siteconfig.database_url import PostgresUrl, url_secrets

NEW_CALL_BUDGET_S = 20.0
HOLD_S = 1.5
IN_FLIGHT = 2
# Meta is told of a lost node's calls once the dispatcher's probe fails: at most one probe
# interval, then the probe's own transaction timeout (tm's fr_timer, [freeswitch]
# invite_timeout), plus a margin
PROBE_FAILS_WITHIN_S = PROBE_INTERVAL_S + 5.0
TOLD_MARGIN_S = 2.0
CREDENTIAL_KEY = "15550100003:ha1"  # the SDES number's HA1 in wa_creds
# with rtpengine's replication, an edge killed: its calls' media back through the other edge
MEDIA_BACK_S = 2.0
REPLICATED_WITHIN_S = 5.0
REDIS_BACK_WITHIN_S = 20.0  # rendered redis-disable-time 10 s, then the next call's writes
YOUNG_KEYS_WITHIN_S = 2.0  # a DTLS call's keys in Redis after its answer (endpoint-learning)
RECORD_GONE_WITHIN_S = 2.0  # a peer's forget KDMQ on the lab's links takes milliseconds
# FreeSWITCH media nodes: a dead node's last heartbeat is at most one heartbeat old at the kill,
# stale after node_lost_after_s, and the surviving wa-esl looks once a heartbeat: closed within
# their sum (plus the drill's polling)
LOST_CLOSED_WITHIN_S = NODE_LOST_AFTER_S + HEARTBEAT_S
LOST_POLL_S = 0.2
CDR_BACK_WITHIN_S = PG_RETRY_AFTER_S + HEARTBEAT_S + 3.0  # PostgreSQL started again
RESTARTED = "media1"  # the node whose wa-esl the PostgreSQL drill restarts while it is down
WA_ESL_EXIT_WITHIN_S = 10.0  # its SIGTERM: calls' tasks cancelled, the spool closed
RESTART_CALLS = 4  # whole calls at most until one is on it (the dispatcher spreads them)


@dataclass
class DrillReport:
    name: str
    placed: int = 0
    lost: int = 0
    first_good_after_s: float | None = None
    checks: list[tuple[str, bool]] = field(default_factory=list)
    not_built: list[tuple[str, bool]] = field(default_factory=list)  # promises nothing keeps yet
    calls: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)  # printed as they are (a command's output)

    @property
    def passed(self) -> bool:
        return all(ok for _, ok in self.checks) and self.first_good_after_s is not None

    def check(self, text: str, ok: bool) -> bool:
        self.checks.append((text, ok))
        return ok

    def lines(self) -> list[str]:
        first = (f"{self.first_good_after_s:.2f} s" if self.first_good_after_s is not None
                 else f"none within {NEW_CALL_BUDGET_S:.0f} s")
        out = [f"[{'PASS' if self.passed else 'FAIL'}] drill: {self.name}",
               f"  calls placed {self.placed}, lost {self.lost}, first good call after the "
               f"fault {first}"]
        out += [f"  call {line}" for line in self.calls]
        out += [f"  {line}" for line in self.shown]
        out += [f"  {'ok  ' if ok else 'FAIL'} {text}" for text, ok in self.checks]
        out += [f"  {'ok  ' if ok else 'NOT BUILT'} {text}" for text, ok in self.not_built]
        return out


def _calls_up(site: ClusterSite, report: DrillReport, count: int = IN_FLIGHT,
              modes: tuple[SrtpMode, ...] = ()) -> list[MetaCall]:
    up = []
    for mode in modes or (SrtpMode.SDES,) * count:
        meta_call = site.call_up(mode)
        report.placed += 1
        up.append(meta_call)
    report.check(f"{len(up)} calls answered before the fault",
                 all(c.answered for c in up))
    time.sleep(1.0)  # media flowing both ways before the fault
    return up


def _new_calls_until_good(site: ClusterSite, report: DrillReport, fault_at: float,
                          extra_good: int = 1) -> list[MetaCall]:
    """Whole calls from now until one is good, then `extra_good` more; within the budget."""
    placed: list[MetaCall] = []
    goods = 0
    while time.monotonic() - fault_at < NEW_CALL_BUDGET_S and goods <= extra_good:
        started = time.monotonic()
        meta_call = site.whole_call(HOLD_S)
        report.placed += 1
        placed.append(meta_call)
        good = meta_call.good and _business_got_bye(site, meta_call)
        if good:
            goods += 1
            if report.first_good_after_s is None:
                report.first_good_after_s = started - fault_at + meta_call.setup_ms / 1000
        else:
            report.lost += 1
            time.sleep(0.3)
        report.calls.append(_with_node(site, meta_call))
    return placed


def _business_got_bye(site: ClusterSite, meta_call: MetaCall, timeout_s: float = 3.0) -> bool:
    """The business node logged the call's BYE (it does once its media party has closed)."""
    return _wait(lambda: site.business_saw(meta_call.wacid, "bye") is not None, timeout_s)


def _with_node(site: ClusterSite, meta_call: MetaCall) -> str:
    node = site.business_saw(meta_call.wacid, "invite")
    return meta_call.line() + (f"; business node {node}" if node else "; no business node")


def _wait(condition: Callable[[], bool], timeout_s: float, poll_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(poll_s)
    return condition()


def media_node_killed(site: ClusterSite) -> DrillReport:
    """media1 (the dispatcher's first choice) SIGKILLed with calls up on it. FreeSWITCH media
    nodes: FreeSWITCH and wa-esl both, and media2's wa-esl must close the calls' CDRs `lost`
    (node media1, the media-node-lost diagnosis) within LOST_CLOSED_WITHIN_S; `wa-esl call
    show` of one is printed."""
    report = DrillReport("a business media node killed mid-call")
    up = _calls_up(site, report)
    report.check("the calls up are on media1",
                 all(site.business_saw(c.wacid, "invite") == "media1" for c in up))
    site.business["media1"].kill()
    fault_at = time.monotonic()
    closed = _LostCalls(site, up, fault_at) if site.freeswitch is not None else None
    new = _new_calls_until_good(site, report, fault_at)
    _wait(lambda: all(site.remote_bye(c) for c in up),
          max(0.0, PROBE_FAILS_WITHIN_S + TOLD_MARGIN_S - (time.monotonic() - fault_at)))
    for meta_call in up:
        uac = meta_call._uac
        at = (uac.remote_bye_at - fault_at) if uac is not None and uac.remote_bye_at else None
        reason = uac.remote_bye_reason if uac is not None else ""
        in_dialog = uac is not None and uac.remote_bye_in_dialog
        told = f"after {at:.2f} s" if at is not None else "never"
        report.check(f"{meta_call.wacid}: Meta is told with a BYE {told} (within "
                     f"{PROBE_FAILS_WITHIN_S + TOLD_MARGIN_S:.0f} s, "
                     f"{'in' if in_dialog else 'NOT in'} the call's dialog), "
                     f"Reason: {reason or 'none'}",
                     at is not None and at <= PROBE_FAILS_WITHIN_S + TOLD_MARGIN_S and in_dialog
                     and "cause=502" in reason and "media node lost" in reason)
    if closed is not None:
        closed.check(report)
    for meta_call in up:
        site.hang_up(meta_call)
        report.lost += 1  # the business side of the call is gone
        report.calls.append(_with_node(site, meta_call))
    report.check("new calls are answered on media2",
                 any(c.good and site.business_saw(c.wacid, "invite") == "media2" for c in new))
    # the new calls above may all have been placed before the probe failed (the kill can land
    # anywhere in a probe interval): wait for both dispatchers, then place one call after
    _wait(lambda: all(state.startswith("I") for state in _media1_states(site)),
          max(0.0, PROBE_FAILS_WITHIN_S + TOLD_MARGIN_S - (time.monotonic() - fault_at)))
    states = _media1_states(site)
    inactive = all(state.startswith("I") for state in states)
    report.check(f"both edges' dispatchers mark media1 inactive after a failed probe ({states})",
                 inactive)
    if inactive:
        after = site.whole_call(HOLD_S)
        report.placed += 1
        report.lost += 0 if after.good else 1
        report.calls.append(_with_node(site, after))
        report.check(f"once the probe failed a new call is not delayed by media1 "
                     f"({after.setup_ms:.0f} ms to answer, on "
                     f"{site.business_saw(after.wacid, 'invite')})",
                     after.good and after.setup_ms < 1000
                     and site.business_saw(after.wacid, "invite") == "media2")
    site.start_business("media1")
    site.wait_for_probes()
    return report


class _LostCalls:
    """The surviving FreeSWITCH node's wa-esl closing the dead node's calls: watched from the
    fault, in a thread of its own (new calls are placed meanwhile), the site's CDR database read
    through media2 every LOST_POLL_S until each call up is `lost` or the budget has passed."""

    def __init__(self, site: ClusterSite, up: list[MetaCall], fault_at: float) -> None:
        self.site = site
        self.up = up
        self.fault_at = fault_at
        self.closed_after: dict[str, float] = {}
        self.errors: list[str] = []
        self._thread = threading.Thread(target=self._watch, name="lost-calls", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        survivor = self.site.media_node("media2")
        wacids = {c.wacid for c in self.up}
        while time.monotonic() - self.fault_at < LOST_CLOSED_WITHIN_S + 5.0:
            try:
                records = survivor.records(wacids)
            except (sqlite3.Error, OSError) as error:  # reported by check(), never raised here
                self.errors.append(f"{type(error).__name__}: {error}")
                return
            for wacid, record in records.items():
                if record.state == "lost" and wacid not in self.closed_after:
                    self.closed_after[wacid] = time.monotonic() - self.fault_at
            if len(self.closed_after) == len(wacids):
                return
            time.sleep(LOST_POLL_S)

    def check(self, report: DrillReport) -> None:
        self._thread.join(timeout=LOST_CLOSED_WITHIN_S + 10.0)
        survivor = self.site.media_node("media2")
        records = survivor.records({c.wacid for c in self.up}) if not self.errors else {}
        for meta_call in self.up:
            record = records.get(meta_call.wacid)
            after = self.closed_after.get(meta_call.wacid)
            diagnosis = (record.diagnosis or "") if record is not None else ""
            said = (f"state {record.state}, node {record.node}, diagnosis "
                    f"{diagnosis[:60] or 'none'}..." if record is not None
                    else f"no CDR ({'; '.join(self.errors) or 'none written'})")
            report.check(
                f"{meta_call.wacid}: media2's wa-esl closed its CDR lost "
                f"{f'after {after:.1f} s' if after is not None else 'never'} (within "
                f"node_lost_after_s {NODE_LOST_AFTER_S} + heartbeat {HEARTBEAT_S:.0f} s "
                f"+ {LOST_POLL_S:.1f} s polling; {said})",
                record is not None and after is not None
                and after <= LOST_CLOSED_WITHIN_S + LOST_POLL_S and record.state == "lost"
                and record.node == "media1" and diagnosis.startswith("media-node-lost"))
        if self.up:
            wacid = self.up[0].wacid
            report.shown.append(f"wa-esl call show {wacid} (on media2):")
            report.shown += [f"  | {line}" for line in survivor.call_show(wacid).splitlines()]


def _media1_states(site: ClusterSite) -> list[str]:
    """media1's dispatcher flags on every edge ('AP' active, 'IP' inactive and probing)."""
    return [site.dispatcher_states(edge).get(site.node("media1").address, "")
            for edge in site.edges.values()]


def _recorded_calls(site: ClusterSite, role: str) -> set[str]:
    """The Call-IDs of the node-loss records (wa_calls, kemi/media_loss.py) edge `role` holds."""
    try:
        dump = call(site.edges[role].rpc_socket, "htable.dump", "wa_calls", timeout=2)
    except RpcError:
        return set()  # an empty table: "no entries" (or the edge is down: nothing held)
    names: set[str] = set()

    def walk(value: object) -> None:
        if isinstance(value, dict):
            name = value.get("name")
            if isinstance(name, str) and "|" in name:
                names.add(name.split("|", 1)[1])
            for inner in value.values():
                walk(inner)
        elif isinstance(value, list):
            for inner in value:
                walk(inner)

    walk(dump)
    return names


def _ha1(site: ClusterSite, role: str) -> str | None:
    try:
        answer = call(site.edges[role].rpc_socket, "htable.get", "wa_creds", CREDENTIAL_KEY,
                      timeout=2)
    except RpcError:
        return None
    return str(answer.get("item", {}).get("value")) if isinstance(answer, dict) else None


def _sync(site: ClusterSite) -> subprocess.CompletedProcess[str]:
    """`provision sync` on edge A's node, reloading both edges, as an operator would run it."""
    edge = site.edges["edgea"]
    config = write_site_toml(site.folder / "sync-site.toml", edge.raw_config)
    argv = [str(REPO / ".venv" / "bin" / "provision"), "sync", "-c", str(config)]
    for other in site.edges.values():
        argv += ["--rpc-socket", str(other.rpc_socket)]
    env = {**os.environ, "WA_GRAPH_TOKEN": "lab-token-unused"}
    return subprocess.run(edge.node.argv(*argv), capture_output=True, text=True, timeout=60,
                          check=False, env=env, cwd=REPO)


def postgres_stopped(site: ClusterSite) -> DrillReport:
    """The site's one PostgreSQL stopped: calls go on from the edges' in-memory credentials;
    FreeSWITCH media nodes keep their CDR writes in their spool and replay them once it is
    back, media1's after its wa-esl was restarted while it was down."""
    report = DrillReport("PostgreSQL stopped")
    assert site.postgres is not None
    before = {role: _ha1(site, role) for role in EDGES}
    logged = {role: media.wa_esl_mark() for role, media in _freeswitch_nodes(site)}
    site.postgres.stop()
    fault_at = time.monotonic()
    while_down = _new_calls_until_good(site, report, fault_at, extra_good=2)
    sync = _sync(site)
    said = " ".join((sync.stdout + sync.stderr).split())
    report.check(f"provision sync reports the fault (exit {sync.returncode}: {said[:200]})",
                 sync.returncode != 0 and "store" in said.lower())
    after = {role: _ha1(site, role) for role in EDGES}
    report.check("sync changed nothing: both edges keep the same credentials",
                 after == before and all(after.values()))
    last = site.whole_call(HOLD_S)
    while_down.append(last)
    report.placed += 1
    report.lost += 0 if last.good else 1
    report.calls.append(_with_node(site, last))
    report.check("a call after the failed sync is good", last.good)
    after_restart = _wa_esl_restarted_while_down(site, report, while_down)
    site.postgres.start()
    back_at = time.monotonic()
    if after_restart is not None:
        _replayed_after_restart(site, report, after_restart, back_at)
    for role, media in _freeswitch_nodes(site):
        # the next drill's calls need their CDRs written: wa-esl's first heartbeat after its
        # connection's retry delay says it writes again
        assert media.wa_esl is not None
        try:
            media.wa_esl.wait_for_line(r"heartbeat written again", CDR_BACK_WITHIN_S,
                                       start=media.wa_esl_offset(logged[role]))
            writes = f"after {time.monotonic() - back_at:.1f} s"
        except LabError as error:
            writes = f"not within {CDR_BACK_WITHIN_S:.0f} s ({error})"
        report.check(f"{role}'s wa-esl writes to PostgreSQL again {writes} (its retry delay "
                     f"{PG_RETRY_AFTER_S:.0f} s + a heartbeat)", writes.startswith("after"))
    _cdrs_spooled_while_down(site, report, while_down, logged)
    return report


@dataclass
class _AfterRestart:
    """media1's wa-esl restarted while PostgreSQL was down, and the call it took then."""

    media: FreeswitchMediaNode
    mark: tuple[int, int]  # its new run's log, from its start
    meta_call: MetaCall | None


def _wa_esl_restarted_while_down(site: ClusterSite, report: DrillReport,
                                 while_down: list[MetaCall]) -> _AfterRestart | None:
    """FreeSWITCH nodes only: media1's wa-esl restarted while PostgreSQL is down (SIGTERM, its
    exit, started again as the lab starts it: it must start without its database, d0d7d31),
    then calls until one is on media1 (answered, tone heard, BYE), within a budget. The calls
    join `while_down`, whose CDRs the database must hold once it is back."""
    nodes = dict(_freeswitch_nodes(site))
    if RESTARTED not in nodes:
        return None  # the plain side: no wa-esl to restart
    media = nodes[RESTARTED]
    try:
        code, up_s = media.restart_wa_esl(WA_ESL_EXIT_WITHIN_S)
        restarted = f"exit {code} at SIGTERM, up again (ESL connection) {up_s:.2f} s after it"
        ok = code == 0
    except LabError as error:
        restarted, ok = f"not up again: {' '.join(str(error).split())[:200]}", False
    report.shown.append(f"{RESTARTED}'s wa-esl restarted while PostgreSQL is down: {restarted}")
    report.check(f"{RESTARTED}'s wa-esl restarts while PostgreSQL is down ({restarted})", ok)
    assert media.wa_esl is not None
    mark = (len(media.wa_esl_runs) - 1, 0)
    if not ok:
        return _AfterRestart(media, mark, None)
    on_node = None
    started = time.monotonic()
    for _ in range(RESTART_CALLS):
        if time.monotonic() - started > NEW_CALL_BUDGET_S:
            break
        meta_call = site.whole_call(HOLD_S)
        report.placed += 1
        while_down.append(meta_call)
        good = meta_call.good and _business_got_bye(site, meta_call)
        report.lost += 0 if good else 1
        report.calls.append(_with_node(site, meta_call) + " (after the wa-esl restart)")
        if site.business_saw(meta_call.wacid, "invite") == RESTARTED:
            on_node = meta_call
            break
    report.check(f"a call on {RESTARTED} after its wa-esl restart is answered, the tone heard, "
                 f"BYE 200 ({on_node.line() if on_node else 'none reached it'})",
                 on_node is not None and on_node.good and _business_got_bye(site, on_node))
    return _AfterRestart(media, mark, on_node)


def _replayed_after_restart(site: ClusterSite, report: DrillReport, after: _AfterRestart,
                            back_at: float) -> None:
    """PostgreSQL back (at `back_at`): the restarted wa-esl's spool replayed, the call it took
    while the database was down in it with invite, answer and end; its start-while-unreachable
    WARNING once, no traceback, no password in its log."""
    media, wa_esl = after.media, after.media.wa_esl
    assert wa_esl is not None
    try:
        drained = wa_esl.wait_for_line(r"CDR spool \S+ drained: .*", CDR_BACK_WITHIN_S)[0]
        replay = f"replayed {time.monotonic() - back_at:.2f} s after PostgreSQL's start"
    except LabError as error:
        drained, replay = "", f"not replayed within {CDR_BACK_WITHIN_S:.0f} s ({error})"
    report.shown.append(f"{RESTARTED}'s wa-esl spool {replay}")
    if after.meta_call is not None:
        wacid = after.meta_call.wacid
        ended = _ended_cdrs(media, {wacid}, CDR_BACK_WITHIN_S)
        record = media.records({wacid}).get(wacid) if ended else None
        has_all = record is not None and bool(record.invite_at and record.answer_at
                                              and record.end_at)
        report.check(f"{RESTARTED}: the CDR of the call after the restart ({wacid}) is in "
                     f"PostgreSQL with invite, answer and end times; spool {replay} "
                     f"({drained.split(': ', 1)[-1][:120]})", has_all)
    text = media.wa_esl_text(after.mark)
    starts = text.count("unreachable at start")
    tracebacks = text.count("Traceback")
    report.check(f"{RESTARTED}'s restarted wa-esl says it started without its database in one "
                 f"WARNING ({starts}), no traceback ({tracebacks})",
                 starts == 1 and tracebacks == 0
                 and "WARNING" in next((line for line in text.splitlines()
                                        if "unreachable at start" in line), ""))
    cdr_db = media.config.esl.cdr_db
    secrets = [ESL_PASSWORD, *(url_secrets(cdr_db.secret_url)
                               if isinstance(cdr_db, PostgresUrl) else [])]
    shown = [secret for secret in secrets if secret in text]
    report.check(f"no password in {RESTARTED}'s restarted wa-esl log ({len(secrets)} looked for: "
                 f"{len(shown)} found)", not shown)


def _cdrs_spooled_while_down(site: ClusterSite, report: DrillReport, while_down: list[MetaCall],
                             logged: dict[str, tuple[int, int]]) -> None:
    """Each FreeSWITCH node kept the CDR writes of its calls while PostgreSQL was down in its
    spool ([esl] cdr_spool) and replayed them once it answered: the calls' CDRs are in the
    database, ended; no handler died on a failed write; one WARNING as spooling started, one as
    it drained."""
    by_node: dict[str, set[str]] = {}
    for meta_call in while_down:
        node = site.business_saw(meta_call.wacid, "invite")
        if node is not None and meta_call.answered:
            by_node.setdefault(node, set()).add(meta_call.wacid)
    for role, media in _freeswitch_nodes(site):
        assert media.wa_esl is not None
        wacids = by_node.get(role, set())
        if wacids:
            try:
                drained = media.wa_esl.wait_for_line(r"CDR spool \S+ drained: .*",
                                                     CDR_BACK_WITHIN_S,
                                                     start=media.wa_esl_offset(
                                                         logged[role]))[0]
            except LabError as error:
                drained = f"not drained within {CDR_BACK_WITHIN_S:.0f} s ({error})"
            ended = _ended_cdrs(media, wacids, CDR_BACK_WITHIN_S)
            report.check(f"{role}: the CDRs of its {len(wacids)} calls placed while PostgreSQL "
                         f"was down are in it once it is back ({len(ended)} ended with answer "
                         f"and end times; {drained.split(': ', 1)[-1][:160]})",
                         ended == wacids)
        since = media.wa_esl_text(logged[role])
        calls, hangups = since.count("call handler failed"), since.count("event handler failed")
        report.check(f"{role}'s wa-esl handles the calls placed while PostgreSQL is down without a "
                     f"traceback ({calls} call handler and {hangups} event handler tracebacks)",
                     calls + hangups == 0)
        starts, drains = since.count("CDR writes go to the spool"), since.count("drained: ")
        report.check(f"{role}'s wa-esl says so in one WARNING as spooling starts and one as it "
                     f"drains, not one per call ({starts} and {drains})",
                     (starts, drains) == ((1, 1) if wacids else (0, 0)))


def _ended_cdrs(media: FreeswitchMediaNode, wacids: set[str], timeout_s: float) -> set[str]:
    """Which of these calls have an ended CDR with answer and end times in the site's
    database, polled until all do or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            records = media.records(wacids)
        except sqlite3.Error:  # PostgreSQL faults too (esl.database.DatabaseError)
            records = {}
        ended = {wacid for wacid, record in records.items()
                 if record.state == "ended" and record.answer_at and record.end_at}
        if ended == wacids or time.monotonic() > deadline:
            return ended
        time.sleep(0.5)


def _freeswitch_nodes(site: ClusterSite) -> list[tuple[str, FreeswitchMediaNode]]:
    """The site's FreeSWITCH + wa-esl media nodes (none when it runs the plain side)."""
    return [(role, media) for role, media in site.business.items()
            if isinstance(media, FreeswitchMediaNode)]


def _media_line(site: ClusterSite, meta_call: MetaCall, fault_at: float) -> tuple[str, bool]:
    """What became of one call's media at the fault, both ways: the silence the fault made
    (ms), the tone heard after it; True when both directions came back within MEDIA_BACK_S
    with the other side's tone."""
    parts, back = [], True
    business = site.business_event(meta_call.wacid, "bye").get("arrivals")
    for direction, arrivals, tone in (
            ("business->Meta", meta_call.arrivals, BUSINESS_TONE_HZ),
            ("Meta->business", Arrivals.from_json(business) if business else None, META_TONE_HZ)):
        if arrivals is None:
            parts.append(f"{direction} not measured")
            back = False
            continue
        gap_ms, gap = arrivals.around(fault_at)
        if gap_ms is None:
            since = (f"{(fault_at - arrivals.last_at) * 1000:.0f} ms before the kill"
                     if arrivals.last_at else "none at all")
            parts.append(f"{direction} never came back (last packet {since})")
            back = False
        elif gap is None:
            parts.append(f"{direction} no gap over {GAP_S * 1000:.0f} ms")
        else:
            heard = f"{gap.heard_hz:.0f} Hz" if gap.heard_hz else "nothing decodable"
            ok = (gap.ms <= MEDIA_BACK_S * 1000 and gap.heard_hz is not None
                  and abs(gap.heard_hz - tone) <= 5.0)
            back = back and ok
            parts.append(f"{direction} back after {gap.ms:.0f} ms ({gap.packets_after} packets, "
                         f"{heard})")
    media = meta_call.media
    if media is not None and media.auth_failures:
        parts.append(f"{media.auth_failures} SRTP auth failures at Meta")
    return f"{meta_call.wacid} ({meta_call.mode.value}): " + "; ".join(parts), back


def _keys_in_redis(site: ClusterSite, meta_call: MetaCall) -> int:
    """How many SRTP key sets edge A's Redis record of the call holds (0: none, or no record)."""
    assert site.redis is not None
    return site.redis.command("GET", meta_call.call_id, db=REDIS_DBS["edgea"]).count(
        "-crypto_suite")


def _replicated(site: ClusterSite, calls: list[MetaCall], standby: str,
                keyed_at: dict[str, float], within_s: float = 0.0) -> bool:
    """Each call's record, SRTP keys in it, in edge A's Redis database and a copy held by the
    standby edge's rtpengine; waited for, bounded. rtpengine writes a call at offer and answer
    (an SDES call's keys are in it then) and again when it confirms each peer's address (the
    rendered endpoint-learning = immediate: at each side's first packet; rtpengine's default
    waits 3 s after the last signalling): a DTLS call's keys, made by the handshake after the
    answer, are written then."""
    host, port = NG_LISTEN.split(":")
    wanted = {c.call_id for c in calls}

    def held() -> bool:
        for meta_call in calls:
            if meta_call.wacid not in keyed_at and _keys_in_redis(site, meta_call):
                keyed_at[meta_call.wacid] = time.monotonic() - (meta_call.answered_at or 0.0)
        if len(keyed_at) < len(calls):
            return False
        with inside(site.node(standby)):
            try:
                return wanted <= set(call_ids(host, int(port)))
            except NgError:
                return False
    return _wait(held, within_s or REPLICATED_WITHIN_S)


def edge_killed(site: ClusterSite) -> DrillReport:
    """Edge A (Meta's first address) SIGKILLed with calls up through it: two SDES, one DTLS,
    and a DTLS call answered just before the kill (as soon as its keys are in Redis).

    With the site's rtpengine replication (ClusterSite.media_replication) edge A's floating
    media address moves to edge B as VRRP would move it, and the calls' media goes on through
    edge B's rtpengine (the copy it kept from Redis): the drill asserts it, both ways, within
    MEDIA_BACK_S, with the other side's tone after the gap. Without, it prints what is lost."""
    report = DrillReport("an edge killed mid-call")
    up = _calls_up(site, report, modes=(SrtpMode.SDES, SrtpMode.SDES, SrtpMode.DTLS))
    if site.media_replication:
        keyed_at: dict[str, float] = {}
        ready = _replicated(site, up, "edgeb", keyed_at)
        seen = ", ".join(f"{c.mode.value} {keyed_at[c.wacid]:.1f} s" for c in up
                         if c.wacid in keyed_at)
        report.check("edge B's rtpengine holds a copy of each call from Redis, SRTP keys in "
                     "edge A's records (the DTLS call's once rtpengine rewrote it after the "
                     f"handshake), within {REPLICATED_WITHIN_S:.0f} s (keys seen this long "
                     f"after the answer, at most: {seen or 'none'})", ready)
    young = site.call_up(SrtpMode.DTLS)  # a DTLS call answered just before the kill
    report.placed += 1
    if site.media_replication:  # killed as soon as its keys are in Redis
        _wait(lambda: _keys_in_redis(site, young) > 0, YOUNG_KEYS_WITHIN_S, poll_s=0.01)
    else:
        time.sleep(0.5)  # its media flowing before the fault
    keyed_ms = (time.monotonic() - (young.answered_at or 0.0)) * 1000
    young_keys = _keys_in_redis(site, young) if site.media_replication else 0
    report.check("the calls up went through edge A",
                 all(c.connected_to == site.node("edgea").address for c in [*up, young]))
    site.edges["edgea"].kill()
    fault_at = time.monotonic()
    age_s = fault_at - (young.answered_at or fault_at)
    answered_before = {young.wacid: f"answered {age_s:.2f} s before the kill (its record "
                       f"{'with SRTP keys' if young_keys else 'WITHOUT SRTP keys'} "
                       f"{keyed_ms:.0f} ms after the answer)"}
    up.append(young)
    if site.media_replication:
        moved_s = take_over(site.node("edgea"), site.node("edgeb"), MEDIA_ADDRESSES["edgea"])
        report.calls.append(f"edge A's media address {MEDIA_ADDRESSES['edgea']} moved to edge B "
                            f"in {moved_s * 1000:.0f} ms (gratuitous ARP sent)")
    new = _new_calls_until_good(site, report, fault_at)
    media_lines = []
    for meta_call in up:  # Meta hangs up the calls that were up, seconds later
        site.hang_up(meta_call)
        reached = _business_got_bye(site, meta_call)
        if not (meta_call.bye_status == 200 and reached):
            report.lost += 1
        report.calls.append(_with_node(site, meta_call))
        report.check(f"{meta_call.wacid}: Meta's BYE reaches the business through edge B "
                     f"(BYE {meta_call.bye_status or 'unanswered'} via "
                     f"{meta_call.bye_via or 'no edge'})",
                     meta_call.bye_status == 200 and reached
                     and meta_call.bye_via == site.node("edgeb").address)
        source = site.business_event(meta_call.wacid, "bye").get("source", "")
        internal = f"{site.node('edgeb').address}:{INTERNAL_PORT}"
        report.check(f"{meta_call.wacid}: edge B relayed it from its internal socket "
                     f"({source or 'no BYE'}; not its DMQ socket)", source == internal)
        media_lines.append(_media_line(site, meta_call, fault_at))
    for meta_call, (line, back) in zip(up, media_lines, strict=True):
        note = answered_before.get(meta_call.wacid)
        if not site.media_replication:
            report.calls.append(f"media after the kill (no replication): {line}")
        elif note:
            report.check(f"media after the kill of a DTLS call {note}: {line}", back)
        else:
            report.check(f"media after the kill: {line}", back)
    report.check("new calls connect within a few seconds (5 s)",
                 report.first_good_after_s is not None and report.first_good_after_s < 5.0)
    report.check("new calls go through edge B",
                 all(c.connected_to == site.node("edgeb").address for c in new if c.good))
    if site.media_replication:
        assert site.redis is not None
        left = {role: site.redis.keys_in(db) for role, db in REDIS_DBS.items()}
        names = {c.call_id: c.wacid for c in up}
        stale = [names.get(key, f"{key} (an earlier drill's)") for key in
                 site.redis.command("KEYS", "*", db=REDIS_DBS["edgea"]).split()]
        report.calls.append(f"Redis after the calls ended: records per edge database {left}"
                            f" (edge A's: {', '.join(stale) or 'none'})")
        take_over(site.node("edgeb"), site.node("edgea"), MEDIA_ADDRESSES["edgea"])
    site.edges["edgea"].stop()
    for log in site.edges["edgea"].folder.glob("*.log"):  # the killed edge's, kept
        log.replace(log.with_suffix(".killed.log"))
    site.edges["edgea"].start()
    if site.media_replication:
        host, port = NG_LISTEN.split(":")
        with inside(site.node("edgea")):
            try:
                restored = len(call_ids(host, int(port)))
            except NgError:
                restored = -1
        report.calls.append(f"edge A restarted: its rtpengine restored {restored} call(s) "
                            "from its Redis database")
    site.wait_for_dmq_peers(site.edges["edgea"])
    site.wait_for_probes()
    return report


def key_rotated(site: ClusterSite) -> DrillReport:
    """The site's in-dialog MAC key rotated (provision rotate-in-dialog-key's rotation, the file
    every edge reads) with calls up: their BYEs, through either edge, still reach the business;
    new calls are signed with the new key."""
    report = DrillReport("the in-dialog MAC key rotated while calls are up")
    up = _calls_up(site, report)
    held = {role: _recorded_calls(site, role) for role in EDGES}
    relayed_by = {c.call_id: role for c in up for role in EDGES
                  if c.connected_to == site.node(role).address}
    ids = set(relayed_by)
    report.check("each answered call's node-loss record is on the edge that relayed its 200 "
                 f"and on no other ({', '.join(f'{r}: {len(ids & held[r])} of {len(ids)}' for r in EDGES)})",
                 len(ids) == len(up) and all(
                     (call_id in held[role]) == (role == relayed_by[call_id])
                     for call_id in ids for role in EDGES))
    old_key = mac_key_id(up[0].route)
    rotation = rotate_key_file(site.edges["edgea"].config.edge.in_dialog_key_file, 3600)
    fault_at = time.monotonic()
    time.sleep(1.2)  # each worker re-reads a changed key file at most once a second
    new = _new_calls_until_good(site, report, fault_at)
    keys = sorted({mac_key_id(c.route) for c in new if c.good})
    report.check(f"new calls are signed with the new key {rotation.key_id} (were {old_key}; "
                 f"now {', '.join(keys) or 'none'})", keys == [rotation.key_id] and bool(old_key))
    for meta_call, via in zip(up, EDGES, strict=True):
        site.hang_up(meta_call, via=via)
        reached = _business_got_bye(site, meta_call)
        if not (meta_call.bye_status == 200 and reached):
            report.lost += 1
        report.calls.append(_with_node(site, meta_call))
        report.check(f"{meta_call.wacid} (old key): Meta's BYE through {via} reaches the "
                     f"business (BYE {meta_call.bye_status or 'unanswered'})",
                     meta_call.bye_status == 200 and reached)
    # a BYE through the edge that has no record tells its peers, and the holder drops it
    def left() -> int:
        return sum(len(ids & _recorded_calls(site, role)) for role in EDGES)

    gone = _wait(lambda: left() == 0, RECORD_GONE_WITHIN_S)
    report.check(f"after the BYEs (one through each edge) no edge holds a record of these calls "
                 f"within {RECORD_GONE_WITHIN_S:.0f} s ({left()} left)", gone)
    return report


def redis_stopped(site: ClusterSite) -> DrillReport:
    """The site's Redis (rtpengine's replication) stopped: calls go on, new ones connect, with
    no delay from the writes rtpengine cannot make; started again (empty, as the lab's Redis
    keeps nothing on disk), a new call's record and the other edge's copy of it come back."""
    report = DrillReport("rtpengine's Redis stopped")
    if site.redis is None:
        report.check("the site runs rtpengine's replication (ClusterSite.media_replication)",
                     False)
        return report
    up = _calls_up(site, report, count=1)
    site.redis.stop()
    fault_at = time.monotonic()
    new = _new_calls_until_good(site, report, fault_at)
    slowest = max((c.setup_ms for c in new if c.answered), default=0.0)
    report.check(f"new calls connect while Redis is down, none slowed by it (slowest answer "
                 f"{slowest:.0f} ms, within 1000)", slowest < 1000 and any(c.good for c in new))
    for meta_call in up:
        site.hang_up(meta_call)
        report.calls.append(_with_node(site, meta_call))
        report.check(f"{meta_call.wacid}, up when Redis stopped: media went on and its BYE "
                     f"reached the business", meta_call.good and _business_got_bye(site, meta_call))
    site.redis.start()
    back_at = time.monotonic()
    # rtpengine stops writing for redis-disable-time (10 s) after redis-allowed-errors failed
    # writes, and writes a call only at its offer, answer and first packets: calls set up in
    # that window are never replicated. New calls until one is, within the budget.
    replicated_after = None
    unreplicated = 0
    while time.monotonic() - back_at < REDIS_BACK_WITHIN_S and replicated_after is None:
        later = site.call_up()
        report.placed += 1
        if _replicated(site, [later], "edgeb", {}, within_s=1.0):
            replicated_after = time.monotonic() - back_at
        else:
            unreplicated += 1
        site.hang_up(later)  # at once: these calls ask about replication, not media
        report.lost += 0 if later.answered and later.bye_status == 200 else 1
        report.calls.append(_with_node(site, later))
    after = f"{replicated_after:.1f} s" if replicated_after is not None else "never"
    report.check(f"Redis started again: a new call's record and edge B's copy of it "
                 f"{after} after the start, within {REDIS_BACK_WITHIN_S:.0f} s "
                 f"({unreplicated} call(s) set up before that were not replicated)",
                 replicated_after is not None)
    return report


DRILLS = (("postgres", postgres_stopped), ("media", media_node_killed), ("edge", edge_killed),
          ("key", key_rotated), ("redis", redis_stopped))
