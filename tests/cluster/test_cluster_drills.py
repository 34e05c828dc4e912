"""The cluster lab (issue 20): a site of several nodes, each in a network namespace of its own
(lab/cluster), and its failure drills, each bounded (new calls within 20 s of the fault).

Needs root and `ip netns` (and Debian's kamailio, rtpengine, haproxy, postgresql, redis-server);
skipped with the reason otherwise. One site for the module; every namespace is gone after it.
Its business media nodes are FreeSWITCH + wa-esl where a FreeSWITCH is installed, else the lab's
plain SIP/RTP side; the checks only FreeSWITCH nodes can keep (CDRs in the site's PostgreSQL, a
dead node's calls closed `lost` by the other) are skipped with the reason where none is.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.cluster.__main__ import missing
from lab.cluster.drills import (
    DrillReport,
    edge_killed,
    key_rotated,
    media_node_killed,
    postgres_stopped,
    redis_stopped,
)
from lab.cluster.freeswitch_node import FreeswitchMediaNode
from lab.cluster.site import MEDIA, ClusterSite
from lab.cluster.topology import TAG, our_namespaces, remove_leftovers
from provisioning.freeswitch_binary import freeswitch_missing

REASON = missing()
pytestmark = [pytest.mark.skipif(REASON is not None, reason=f"cluster lab: {REASON}"),
              pytest.mark.timeout(240)]
INVITE_TIMEOUT_S = 5  # examples/site.toml [freeswitch] invite_timeout: a dead node's first cost
FREESWITCH_MISSING = freeswitch_missing()
needs_freeswitch = pytest.mark.skipif(FREESWITCH_MISSING is not None,
                                      reason=f"media nodes on the plain side: {FREESWITCH_MISSING}")
REPORTS: dict[str, DrillReport] = {}  # drills whose checks a later test reads


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSite]:
    with ClusterSite(tmp_path_factory.mktemp("cluster")) as running:
        yield running
    assert our_namespaces() == []  # every namespace, and so every veth, removed


def test_every_node_has_its_own_namespace_and_address_and_a_call_crosses_the_site(
        site: ClusterSite) -> None:
    assert site.network is not None
    names = {node.net.name for node in site.network.nodes.values()}
    assert len(names) == 6 and set(our_namespaces()) >= names
    addresses = {node.address for node in site.network.nodes.values()}
    assert len(addresses) == 6
    assert site.new_call().hosts == [site.node("edgea").address, site.node("edgeb").address]
    call = site.whole_call()
    assert call.good, call.line()
    assert site.business_saw(call.wacid, "invite") == "media1"  # the dispatcher's first choice
    assert site.business_heard_meta(call.wacid)
    assert (site.freeswitch is None) == (FREESWITCH_MISSING is not None), site.media_kind
    # the host's namespace holds none of the site's addresses
    host_addresses = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True,
                                    check=True).stdout
    assert "198.18.20." not in host_addresses


def test_postgres_stopped_calls_go_on_and_sync_changes_nothing(site: ClusterSite) -> None:
    report = postgres_stopped(site)
    assert report.passed, "\n".join(report.lines())
    assert report.lost == 0 and report.placed >= 4
    # FreeSWITCH nodes: media1's wa-esl restarted while it was down (its start, a call after
    # it, that call's CDR replayed, one WARNING, no password); the plain side has no wa-esl
    restarted = [text for text, _ in report.checks if "wa-esl restart" in text
                 or "restarted wa-esl" in text or "the call after the restart" in text]
    assert len(restarted) == (5 if site.freeswitch is not None else 0), restarted


def test_media_node_killed_meta_is_told_with_a_bye_and_new_calls_go_to_the_other_node(
        site: ClusterSite) -> None:
    # the report's checks include one per call up: Meta got a BYE with the Reason in time
    report = media_node_killed(site)
    REPORTS["media"] = report
    assert report.passed, "\n".join(report.lines())
    assert report.first_good_after_s is not None
    assert report.first_good_after_s < INVITE_TIMEOUT_S + 2  # one dead-node timeout at most


@needs_freeswitch
def test_a_killed_freeswitch_nodes_calls_are_closed_lost_by_the_other(site: ClusterSite) -> None:
    """The media drill above, on FreeSWITCH nodes: media2's wa-esl closed media1's calls
    `lost` (node named, diagnosis) within node_lost_after_s and a heartbeat, `wa-esl call
    show` on media2 says so, and each node reads the other's CDRs (one PostgreSQL)."""
    report = REPORTS.get("media")
    if report is None:
        pytest.skip("the media drill did not run")
    lost = [(text, ok) for text, ok in report.checks if "closed its CDR lost" in text]
    assert len(lost) == 2 and all(ok for _, ok in lost), lost
    shown = "\n".join(report.shown)
    assert "state lost node media1" in shown and "media-node-lost" in shown, shown
    assert all(isinstance(site.business[role], FreeswitchMediaNode) for role in MEDIA)
    # one database for both nodes: media1, restarted, reads its lost calls and media2's
    up = {line.split(":")[0] for line in report.calls if "the site sent Meta a BYE" in line}
    new = {line.split(":")[0] for line in report.calls
           if "Meta's BYE 200" in line and line.endswith("business node media2")}
    records = site.media_node("media1").records(up | new)
    assert {records[w].state for w in up} == {"lost"} and len(up) == 2, records
    assert {(records[w].state, records[w].node) for w in new} == {("ended", "media2")}, records


def test_edge_killed_the_bye_goes_through_the_other_edge_and_new_calls_connect(
        site: ClusterSite) -> None:
    """With rtpengine's replication (the site's default) and edge A's media address moved to
    edge B, the media of the calls up through A goes on both ways through B's rtpengine, the
    other side's tone heard after the gap (checked per call, MEDIA_BACK_S): two SDES calls, a
    DTLS one, and a DTLS one killed as soon as its keys were in Redis."""
    assert site.media_replication
    report = edge_killed(site)
    assert report.passed, "\n".join(report.lines())
    assert report.lost == 0
    media = [text for text, ok in report.checks if text.startswith("media after the kill") and ok]
    assert len(media) == 4 and sum("(DTLS)" in text for text in media) == 2, media
    assert report.first_good_after_s is not None and report.first_good_after_s < 5


def test_key_rotated_with_calls_up_drops_nothing(site: ClusterSite) -> None:
    report = key_rotated(site)
    assert report.passed, "\n".join(report.lines())
    assert report.lost == 0


def test_redis_stopped_calls_go_on_and_replication_comes_back(site: ClusterSite) -> None:
    """rtpengine's Redis is in no call's path: stopped, calls connect as fast; started again,
    new calls are replicated once rtpengine's redis-disable-time (10 s) has passed."""
    report = redis_stopped(site)
    assert report.passed, "\n".join(report.lines())
    assert report.lost == 0


def test_namespaces_a_crashed_run_left_are_removed_by_name(tmp_path: Path) -> None:
    dead_pid = 9_999_999  # above the largest pid_max Linux allows (2**22): no such process
    name = f"{TAG}{dead_pid}edgea"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        assert name in remove_leftovers()
        assert name not in our_namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
