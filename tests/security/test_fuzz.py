"""A short mutation-fuzz run (the long one is `make bench-abuse`): 2,000 mutated requests from
Meta's side over TLS and from untrusted addresses over UDP. Nothing may reach FreeSWITCH, no
Python traceback may be logged and no Kamailio process may die, whatever the bytes."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from lab.attack.edge_watch import count_tracebacks, kamailio_pids, log_problems
from lab.attack.freeswitch_sink import FreeswitchSink
from lab.attack.sip_fuzz import FuzzContext, TlsSender, mutated_messages, send_udp
from lab.attack.targets import attacker_sources, loopback_target
from lab.edge import EdgeLab
from lab.processes import free_port
from tests.conftest import edge_overrides

MESSAGES = 1000  # per transport
RATE = 300.0  # messages/s, below pike's 100/s per source over 20 sources


@pytest.fixture(scope="module")
def fuzz_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    with EdgeLab(tmp_path_factory.mktemp("fuzz-edge"), edge_overrides()) as lab:
        yield lab


def test_fuzzed_requests_are_never_relayed_and_never_raise(fuzz_edge: EdgeLab) -> None:
    node1, node2 = fuzz_edge.ports.freeswitch
    spare = free_port(socket.SOCK_DGRAM)
    ctx = FuzzContext(fuzz_edge.config.site.sip_domain,
                      fuzz_edge.config.numbers[0].business_number, fuzz_edge.ports.tls,
                      fuzz_edge.ports.internal, (node1, node2, spare))
    pids = kamailio_pids(fuzz_edge.rpc_socket)
    with FreeswitchSink((node1, node2, spare)) as sink:
        udp = send_udp(loopback_target("127.0.0.1", fuzz_edge.ports.internal),
                       mutated_messages(ctx, MESSAGES, seed=101), attacker_sources(20, first=2),
                       time_limit_s=60, rate_per_s=RATE)
        tls = TlsSender(loopback_target("127.0.0.1", fuzz_edge.ports.tls),
                        attacker_sources(20, first=30)).send(
            mutated_messages(ctx, MESSAGES, seed=102), time_limit_s=60, rate_per_s=RATE)
        relayed = sink.relayed()
    assert udp.sent == MESSAGES and udp.replies > MESSAGES // 4, udp
    assert tls.sent > MESSAGES * 0.9 and tls.replies > MESSAGES // 10, tls
    assert relayed == [], f"{len(relayed)} relayed, e.g. {relayed[:3]}"
    log = fuzz_edge.kamailio_log()
    assert count_tracebacks(log) == 0
    assert [line for line in log_problems(log) if "Traceback" not in line] == []
    assert "500" not in udp.statuses, f"untrusted UDP sources got 500s: {udp.statuses}"
    assert kamailio_pids(fuzz_edge.rpc_socket) == pids
