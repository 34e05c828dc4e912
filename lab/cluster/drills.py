"""The cluster lab's failure drills, each bounded in time: calls up when the fault strikes, the
fault, what became of those calls, and new calls until one is good (or the drill's budget ends).

Each drill returns a `DrillReport`: calls placed, calls lost (placed and not good: the ones up
at the fault count lost when the business never heard Meta's BYE, new ones when not good), the
time from the fault to the first good call, and one check per promise the drill tests. Every
drill leaves the site as it found it (the node restarted, probes green again).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.cluster.edge_node import INTERNAL_PORT, PROBE_INTERVAL_S
from lab.cluster.meta import MetaCall, mac_key_id
from lab.cluster.site import EDGES, REPO, ClusterSite
from lab.site_toml import write_site_toml
from provisioning.in_dialog_keys import rotate_key_file
from provisioning.kamailio_rpc import RpcError, call

NEW_CALL_BUDGET_S = 20.0
HOLD_S = 1.5
IN_FLIGHT = 2
# Meta is told of a lost node's calls once the dispatcher's probe fails: at most one probe
# interval, then the probe's own transaction timeout (tm's fr_timer, [freeswitch]
# invite_timeout), plus a margin
PROBE_FAILS_WITHIN_S = PROBE_INTERVAL_S + 5.0
TOLD_MARGIN_S = 2.0
CREDENTIAL_KEY = "15550100003:ha1"  # the SDES number's HA1 in wa_creds


@dataclass
class DrillReport:
    name: str
    placed: int = 0
    lost: int = 0
    first_good_after_s: float | None = None
    checks: list[tuple[str, bool]] = field(default_factory=list)
    not_built: list[tuple[str, bool]] = field(default_factory=list)  # promises nothing keeps yet
    calls: list[str] = field(default_factory=list)

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
        out += [f"  {'ok  ' if ok else 'FAIL'} {text}" for text, ok in self.checks]
        out += [f"  {'ok  ' if ok else 'NOT BUILT'} {text}" for text, ok in self.not_built]
        return out


def _calls_up(site: ClusterSite, report: DrillReport, count: int = IN_FLIGHT) -> list[MetaCall]:
    up = []
    for _ in range(count):
        meta_call = site.call_up()
        report.placed += 1
        up.append(meta_call)
    report.check(f"{count} calls answered before the fault",
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


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def media_node_killed(site: ClusterSite) -> DrillReport:
    """media1 (the dispatcher's first choice) SIGKILLed with calls up on it."""
    report = DrillReport("a business media node killed mid-call")
    up = _calls_up(site, report)
    report.check("the calls up are on media1",
                 all(site.business_saw(c.wacid, "invite") == "media1" for c in up))
    site.business["media1"].kill()
    fault_at = time.monotonic()
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
    for meta_call in up:
        site.hang_up(meta_call)
        report.lost += 1  # the business side of the call is gone
        report.calls.append(_with_node(site, meta_call))
    report.check("new calls are answered on media2",
                 any(c.good and site.business_saw(c.wacid, "invite") == "media2" for c in new))
    states = [site.dispatcher_states(edge).get(site.node("media1").address, "")
              for edge in site.edges.values()]
    report.check(f"both edges' dispatchers mark media1 inactive after a failed probe ({states})",
                 all(state.startswith("I") for state in states))
    if len(new) >= 2 and new[-1].good:
        report.check(f"once the probe failed a new call is not delayed by media1 "
                     f"({new[-1].setup_ms:.0f} ms to answer)", new[-1].setup_ms < 1000)
    site.start_business("media1")
    site.wait_for_probes()
    return report


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
    """The site's one PostgreSQL stopped: calls go on from the edges' in-memory credentials."""
    report = DrillReport("PostgreSQL stopped")
    assert site.postgres is not None
    before = {role: _ha1(site, role) for role in EDGES}
    site.postgres.stop()
    fault_at = time.monotonic()
    _new_calls_until_good(site, report, fault_at, extra_good=2)
    sync = _sync(site)
    said = " ".join((sync.stdout + sync.stderr).split())
    report.check(f"provision sync reports the fault (exit {sync.returncode}: {said[:200]})",
                 sync.returncode != 0 and "store" in said.lower())
    after = {role: _ha1(site, role) for role in EDGES}
    report.check("sync changed nothing: both edges keep the same credentials",
                 after == before and all(after.values()))
    last = site.whole_call(HOLD_S)
    report.placed += 1
    report.lost += 0 if last.good else 1
    report.calls.append(_with_node(site, last))
    report.check("a call after the failed sync is good", last.good)
    site.postgres.start()
    return report


def edge_killed(site: ClusterSite) -> DrillReport:
    """Edge A (Meta's first address) SIGKILLed with calls up through it."""
    report = DrillReport("an edge killed mid-call")
    up = _calls_up(site, report)
    report.check("the calls up went through edge A",
                 all(c.connected_to == site.node("edgea").address for c in up))
    site.edges["edgea"].kill()
    fault_at = time.monotonic()
    new = _new_calls_until_good(site, report, fault_at)
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
    report.check("new calls connect within a few seconds (5 s)",
                 report.first_good_after_s is not None and report.first_good_after_s < 5.0)
    report.check("new calls go through edge B",
                 all(c.connected_to == site.node("edgeb").address for c in new if c.good))
    site.edges["edgea"].stop()
    site.edges["edgea"].start()
    site.wait_for_dmq_peers(site.edges["edgea"])
    site.wait_for_probes()
    return report


def key_rotated(site: ClusterSite) -> DrillReport:
    """The site's in-dialog MAC key rotated (provision rotate-in-dialog-key's rotation, the file
    every edge reads) with calls up: their BYEs, through either edge, still reach the business;
    new calls are signed with the new key."""
    report = DrillReport("the in-dialog MAC key rotated while calls are up")
    up = _calls_up(site, report)
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
    return report


DRILLS = (("postgres", postgres_stopped), ("media", media_node_killed), ("edge", edge_killed),
          ("key", key_rotated))
