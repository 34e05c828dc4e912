"""[cluster]: what `provision render` writes for one edge of several, and what it refuses.

A single edge (no [cluster] edges) renders exactly as before: no dmq, auth's own nonce_count.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from kemi.settings import load_settings
from lab.edge import EXAMPLE_CONFIG, merge
from provisioning.cluster_doctor import cluster_findings
from provisioning.doctor import Level
from provisioning.render import RenderError, render_kamailio
from siteconfig.model import SiteConfig
from tests.test_render import kamailio_check

SECRET = "5b1e0c7a9d3f48e2b6a1c0d9e8f7a6b5"
EDGES = ["127.0.0.1:5090", "127.0.0.2:5090"]


def site(changes: dict[str, Any]) -> SiteConfig:
    raw = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    return SiteConfig.model_validate(merge(raw, changes))


def secret_file(folder: Path, text: str = SECRET) -> Path:
    path = folder / "nonce.secret"
    path.write_text(text + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def cluster(this_edge: str, secret: Path, edges: list[str] | None = None) -> SiteConfig:
    return site({"cluster": {"edges": edges or EDGES, "this_edge": this_edge,
                             "nonce_secret_file": str(secret)}})


def rendered(cfg: SiteConfig, out: Path) -> str:
    return (render_kamailio(cfg, out) / "kamailio.cfg").read_text(encoding="utf-8")


def auth_secret(text: str) -> str | None:
    match = re.search(r'^modparam\("auth", "secret", "([^"]*)"\)', text, re.M)
    return match[1] if match else None


def test_a_single_edge_renders_no_dmq_and_keeps_auths_nonce_count(tmp_path: Path) -> None:
    text = rendered(site({}), tmp_path / "out")
    assert 'loadmodule "dmq.so"' not in text
    assert 'modparam("dmq"' not in text and 'name "dmq"' not in text
    assert "enable_dmq" not in text and "wa_nonce" not in text
    assert "ds_default_sockname" not in text
    assert "dmqreplicate" not in text
    assert 'modparam("auth", "nonce_count", 1)' in text
    assert auth_secret(text) is None
    settings = json.loads((tmp_path / "out" / "kamailio" / "edge-settings.json").read_text())
    assert settings["cluster"] is None
    assert not load_settings(tmp_path / "out" / "kamailio" / "edge-settings.json").cluster.enabled


def test_an_edge_of_a_cluster_loads_dmq_on_its_private_socket_only(tmp_path: Path) -> None:
    text = rendered(cluster(EDGES[0], secret_file(tmp_path)), tmp_path / "out")
    dmq_listens = [line for line in text.splitlines() if line.startswith("listen=")
                   and "5090" in line]
    assert dmq_listens == ['listen=udp:127.0.0.1:5090 name "dmq"']
    assert re.search(r'^listen=tls:0\.0\.0\.0:5061', text, re.M) or "listen=tcp:" in text
    assert 'loadmodule "dmq.so"' in text
    assert text.index('loadmodule "dmq.so"') < text.index('loadmodule "htable.so"')
    assert 'modparam("dmq", "server_address", "sip:127.0.0.1:5090")' in text
    # notified: the peers, never this edge itself
    assert re.findall(r'modparam\("dmq", "notification_address", "([^"]+)"\)', text) \
        == ["sip:127.0.0.2:5090"]
    assert re.search(r'"wa_authfail=>[^"]*;dmqreplicate=1"', text)
    assert re.search(r'"wa_nonce=>[^"]*autoexpire=40;dmqreplicate=1"', text)
    # the node-loss records stay on the edge that relayed the 200 (kemi/media_loss.py)
    assert re.search(r'"wa_calls=>[^"]*"', text) and not re.search(r'"wa_calls=>[^"]*dmq', text)
    assert 'modparam("htable", "enable_dmq", 1)' in text
    assert 'modparam("auth", "nonce_count", 0)' in text  # the edge checks nc from wa_nonce
    assert "wa_dmq_not_peer" in text
    # calls and probes toward FreeSWITCH leave from the internal socket, never the DMQ one
    assert 'modparam("dispatcher", "ds_default_sockname", "internal")' in text
    settings = load_settings(tmp_path / "out" / "kamailio" / "edge-settings.json")
    assert settings.cluster.dmq_peers == frozenset({("127.0.0.2", 5090)})
    assert settings.cluster.nonce_table == "wa_nonce"


def test_an_edge_of_a_cluster_takes_its_peers_internal_route_entries_as_its_own(
        tmp_path: Path) -> None:
    """Meta's BYE of a call edge A took may reach edge B: A's internal Record-Route entry (A's
    DMQ address, the internal port) is an alias on B, so B's loose_route consumes it; a single
    edge aliases no other address."""
    text = rendered(cluster(EDGES[0], secret_file(tmp_path)), tmp_path / "out")
    port = site({}).listen.internal_socket()[1]
    assert re.findall(r"^alias=udp:(\S+)$", text, re.M) == [f"127.0.0.2:{port}"]
    assert not re.findall(r"^alias=udp:", rendered(site({}), tmp_path / "single"), re.M)


def test_every_edge_gets_the_same_nonce_secret_and_never_the_files_text(tmp_path: Path) -> None:
    secret = secret_file(tmp_path)
    text_a = rendered(cluster(EDGES[0], secret), tmp_path / "a")
    text_b = rendered(cluster(EDGES[1], secret), tmp_path / "b")
    assert auth_secret(text_a) is not None and re.fullmatch(r"[0-9a-f]{64}", auth_secret(text_a) or "")
    assert auth_secret(text_a) == auth_secret(text_b)
    assert SECRET not in text_a and SECRET not in text_b
    other = tmp_path / "other"
    other.mkdir()
    text_c = rendered(cluster(EDGES[0], secret_file(other, SECRET[::-1])), tmp_path / "c")
    assert auth_secret(text_c) != auth_secret(text_a)


def test_the_secret_comes_from_the_variable_when_no_file_is_named(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WA_SIP_NONCE_SECRET", SECRET)
    cfg = site({"cluster": {"edges": EDGES, "this_edge": EDGES[1]}})
    from_env = auth_secret(rendered(cfg, tmp_path / "env"))
    from_file = auth_secret(rendered(cluster(EDGES[0], secret_file(tmp_path)), tmp_path / "file"))
    assert from_env == from_file


@pytest.mark.parametrize("text, why", [("short-one", "shorter than 16"), ("", "is empty")])
def test_a_cluster_without_a_usable_secret_is_not_rendered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, why: str) -> None:
    monkeypatch.delenv("WA_SIP_NONCE_SECRET", raising=False)
    path = tmp_path / "nonce.secret"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RenderError, match=why) as raised:
        render_kamailio(cluster(EDGES[0], path), tmp_path / "out")
    assert not (tmp_path / "out" / "kamailio").exists()
    if text:
        assert text not in str(raised.value)


def test_the_rendered_cluster_config_passes_kamailio_check(tmp_path: Path) -> None:
    target = render_kamailio(cluster(EDGES[1], secret_file(tmp_path)), tmp_path / "out")
    check = kamailio_check(target / "kamailio.cfg")
    assert check.returncode == 0, check.stderr[-2000:]


@pytest.mark.parametrize("section, problem", [
    ({"edges": ["127.0.0.1:5090"], "this_edge": "127.0.0.1:5090"}, "one edge is no cluster"),
    ({"edges": ["93.184.216.34:5090", "127.0.0.2:5090"], "this_edge": "127.0.0.2:5090"},
     "loopback or private"),
    ({"edges": ["0.0.0.0:5090", "127.0.0.2:5090"], "this_edge": "127.0.0.2:5090"},
     "loopback or private"),
    ({"edges": ["dmq.internal:5090", "127.0.0.2:5090"], "this_edge": "127.0.0.2:5090"},
     "not an IP address"),
    ({"edges": EDGES}, "this_edge must name"),
    ({"edges": EDGES, "this_edge": "127.0.0.3:5090"}, "not one of edges"),
    ({"edges": ["127.0.0.1:5061", "127.0.0.2:5061"], "this_edge": "127.0.0.1:5061"},
     "never share Meta's port"),
    ({"edges": ["10.0.0.5:5060", "10.0.0.6:5090"], "this_edge": "10.0.0.5:5060"},
     "listen.internal's socket"),
    ({"this_edge": "127.0.0.1:5090"}, "edges is empty"),
])
def test_cluster_mistakes_are_refused(section: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        site({"cluster": section})


def test_doctor_warns_of_a_nonce_secret_others_can_read(tmp_path: Path) -> None:
    secret = secret_file(tmp_path)
    assert cluster_findings(cluster(EDGES[0], secret), [])[0].level is Level.PASS
    secret.chmod(0o644)
    (found, _no_rpc) = cluster_findings(cluster(EDGES[0], secret), [])
    assert found.level is Level.WARN and found.fix == f"chmod 600 {secret}"
    assert SECRET not in found.cause + found.fix
    secret.write_text("", encoding="utf-8")
    assert cluster_findings(cluster(EDGES[0], secret), [])[0].level is Level.FAIL
    assert cluster_findings(site({}), []) == []
