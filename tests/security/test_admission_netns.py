"""Admission before TLS (issue 17, item 4), proven in network namespaces this test creates.

Found by attacking the edge on 6.1.4: ~400 idle TLS connections spread over 200 addresses, each
far under the per-source limit, fill the edge's total cap and Meta's call is refused while they
are held. The rendered nftables rules (OUT/nftables/wa-sip.nft) give Meta's ranges a budget of
their own and keep every other source inside what is left of the cap, limited per source.

The listener in the server namespace caps its own total like Kamailio's max_connections (scaled
to 60). Meta is 10.77.0.2 (10.77.0.0/24 configured as Meta's range), the attackers 198.18.x.y.
`held` is what the listener holds once it has got through every connection the kernel completed
(`Listener.settle`): while it is still behind, an attacker's socket waiting in its accept queue
looks held (1600 of 1600 when the listener is slowed down, against its cap of 60).
Each test first shows the attack working without the rule it is about, then refused with it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioning.render_nftables import render_nftables
from siteconfig.model import parse_config
from tests.security.netns_topology import META_RANGE, Topology, topology, unavailable_reason

pytestmark = pytest.mark.skipif((reason := unavailable_reason()) is not None, reason=reason or "")

PORT = 5061
LISTENER_CAP = 60          # the edge's own total cap (Kamailio max_connections, scaled down)
META_BUDGET = 16           # meta_connections: others get LISTENER_CAP - 16 = 44
ATTACKER_SOURCES = 200


def site_config(folder: Path, **admission: object) -> Path:
    """A site config whose TLS port is PORT and whose Meta is META_RANGE; render its rules."""
    settings = {"meta_ranges": [META_RANGE], "meta_connections": META_BUDGET, **admission}
    lines = []
    for key, value in settings.items():
        if isinstance(value, bool):
            lines.append(f"{key} = {'true' if value else 'false'}")
        elif isinstance(value, list):
            lines.append(f"{key} = [{', '.join(repr(v) for v in value)}]".replace("'", '"'))
        else:
            lines.append(f"{key} = {value}")
    admission_toml = "\n".join(lines)
    text = f"""
[site]
sip_domain = "sip.example.com"
[tls]
certificate = "cert.pem"
private_key = "key.pem"
[listen]
tls = "0.0.0.0:{PORT}"
[security.connections]
max_connections = {LISTENER_CAP}
[security.admission]
{admission_toml}
[[freeswitch.sets]]
id = 1
nodes = [{{ uri = "sip:127.0.0.1:5080" }}]
"""
    config = folder / "site.toml"
    folder.mkdir(parents=True, exist_ok=True)
    config.write_text(text)
    ruleset = render_nftables(parse_config(text, config), folder / "out")
    assert ruleset is not None
    return ruleset


@pytest.fixture(scope="module")
def net() -> Iterator[Topology]:
    with topology(ATTACKER_SOURCES) as namespaces:
        yield namespaces


@pytest.fixture
def server(net: Topology) -> Iterator[Topology]:
    """A fresh capped listener and no rules; whatever the test loads is removed after it."""
    net.start_listener(PORT, LISTENER_CAP)
    try:
        yield net
    finally:
        net.clear_rules()
        net.stop_listener()


def test_meta_connects_under_the_many_source_idle_attack(server: Topology, tmp_path: Path) -> None:
    sources = server.attacker_sources
    per_source = 8  # each source up to per_source_connections, held idle
    # Without admission: 1600 attempts fill the listener's cap; Meta's connection is closed unanswered.
    with server.flood(sources, per_source, PORT) as attack:
        bare = server.probe(PORT)
    assert attack["attempted"] == ATTACKER_SOURCES * per_source
    assert attack["held"] == LISTENER_CAP, attack
    assert not bare["answered"], bare

    server.load_rules(site_config(tmp_path, per_source_connections=per_source))
    with server.flood(sources, per_source, PORT) as attack:
        probes = [server.probe(PORT) for _ in range(3)]
        counters = server.counters()
    print(f"\nattack: {attack}; Meta: {probes}; rules: {counters}")
    assert attack["held"] == LISTENER_CAP - META_BUDGET, attack
    assert attack["refused"] == attack["attempted"] - attack["connected"]
    assert attack["refused"] >= ATTACKER_SOURCES * per_source - (LISTENER_CAP - META_BUDGET)
    assert all(p["answered"] for p in probes), probes
    assert max(p["connect_ms"] for p in probes) < 500
    assert counters["other connections"] >= attack["refused"]
    assert counters["meta admitted"] == 3


def test_per_source_concurrent_limit(server: Topology, tmp_path: Path) -> None:
    source, attempts, cap = server.attacker_sources[:1], 20, 8
    # The rate is out of the way here: only the concurrent count is judged.
    relaxed = {"per_source_new_per_second": 1000, "per_source_new_burst": 1000}
    server.load_rules(site_config(tmp_path / "without", per_source_connections=40, **relaxed))
    with server.flood(source, attempts, PORT) as unlimited:
        pass
    assert unlimited["held"] == attempts, unlimited

    server.load_rules(site_config(tmp_path / "with", per_source_connections=cap, **relaxed))
    with server.flood(source, attempts, PORT) as limited:
        counters = server.counters()
    print(f"\nper-source connections: without {unlimited}, with {limited}; rules: {counters}")
    assert limited["held"] == cap and limited["refused"] == attempts - cap, limited
    assert counters["per-source connections"] >= attempts - cap
    # The limit is per source: a second address still gets its own.
    with server.flood(server.attacker_sources[1:2], cap, PORT) as other:
        pass
    assert other["held"] == cap, other


def test_per_source_new_connection_rate(server: Topology, tmp_path: Path) -> None:
    source, attempts, rate, burst = server.attacker_sources[2:3], 30, 4, 8
    server.load_rules(site_config(tmp_path / "without", per_source_connections=40,
                                  per_source_new_per_second=1000, per_source_new_burst=1000))
    with server.flood(source, attempts, PORT) as unlimited:
        pass
    assert unlimited["connected"] == attempts, unlimited

    server.load_rules(site_config(tmp_path / "with", per_source_connections=40,
                                  per_source_new_per_second=rate, per_source_new_burst=burst))
    started = time.monotonic()
    with server.flood(source, attempts, PORT) as limited:
        counters = server.counters()
    elapsed = time.monotonic() - started
    print(f"\nnew-connection rate: without {unlimited}, with {limited} in {elapsed:.1f} s; rules: {counters}")
    assert burst <= limited["connected"] <= burst + 2, limited
    assert limited["refused"] == attempts - limited["connected"]
    assert counters["per-source new rate"] >= limited["refused"]
    time.sleep(1.0)  # a rate, not a ban: the bucket refills
    with server.flood(source, 2, PORT) as later:
        pass
    assert later["connected"] >= 1, later


def test_meta_only_scanner_never_completes_a_handshake(server: Topology, tmp_path: Path) -> None:
    scanner = server.attacker_sources[3:4]
    server.load_rules(site_config(tmp_path / "open", meta_only=False))
    with server.flood(scanner, 1, PORT) as open_port:
        pass
    assert open_port["connected"] == 1, open_port

    server.load_rules(site_config(tmp_path / "meta-only", meta_only=True))
    with server.flood(scanner, 5, PORT, timeout=2.5) as scan:
        counters = server.counters()
    meta = server.probe(PORT)
    print(f"\nmeta_only: scanner {scan}; Meta {meta}; rules: {counters}")
    assert scan["connected"] == 0 and scan["timed_out"] == 5, scan
    assert counters["not meta"] >= 5
    assert meta["answered"], meta
