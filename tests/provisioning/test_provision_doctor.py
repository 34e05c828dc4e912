"""`provision doctor`: TLS as Meta sees it (against real TLS servers on loopback) and the Graph checks."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from lab import certs
from lab.certs import Leaf, make_test_ca
from lab.graph_standin import GraphStandin
from provisioning.doctor import from_domain_matches, tls_findings
from provisioning.tls_probe import hostname_matches, probe_tls
from tests.provisioning.conftest import APP_ID, NUMBERS, OTHER_APP_ID, SIP_DOMAIN, provision, site_toml

ONE, PNID1 = NUMBERS[0]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> certs.TestCa:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@contextmanager
def tls_server(leaf: Leaf, request_client_cert: bool = False, ca: Path | None = None) -> Iterator[int]:
    """A TLS server on a loopback port that completes handshakes and hangs up."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf.certificate, leaf.private_key)
    if request_client_cert:
        assert ca is not None
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(ca)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            connection.settimeout(3)
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def levels(ca: certs.TestCa, port: int) -> dict[str, str]:
    probe = probe_tls("127.0.0.1", port, SIP_DOMAIN, ca.certificate, timeout=3)
    return {f.check: f.level.value for f in tls_findings(probe, expiry_days=21)}


def test_good_certificate_passes_every_tls_check(ca: certs.TestCa) -> None:
    with tls_server(ca.issue("good", [SIP_DOMAIN], days=90)) as port:
        assert levels(ca, port) == {"tcp": "pass", "tls.chain": "pass", "tls.hostname": "pass",
                                    "tls.expiry": "pass", "tls.client_certificate": "pass"}


def test_wrong_name_soon_expiry_and_client_cert_request_are_found(ca: certs.TestCa) -> None:
    with tls_server(ca.issue("other", ["other.example.com"], days=5), request_client_cert=True,
                    ca=ca.certificate) as port:
        found = levels(ca, port)
    assert found["tls.hostname"] == "fail" and found["tls.chain"] == "pass"
    assert found["tls.expiry"] == "warn"
    assert found["tls.client_certificate"] == "fail"


def test_unknown_ca_fails_the_chain(ca: certs.TestCa, tmp_path: Path) -> None:
    stranger = make_test_ca(tmp_path / "stranger", "stranger CA")
    with tls_server(stranger.issue("edge", [SIP_DOMAIN])) as port:
        assert levels(ca, port)["tls.chain"] == "fail"


def test_closed_port_fails_tcp(ca: certs.TestCa) -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        port = placeholder.getsockname()[1]
    assert levels(ca, port) == {"tcp": "fail"}


def test_name_rules() -> None:
    assert hostname_matches("sip.example.com", ["*.example.com"])
    assert not hostname_matches("a.sip.example.com", ["*.example.com"])
    assert not hostname_matches("example.com", ["*.example.com"])
    assert from_domain_matches("example.com", "bar.example.com")
    assert from_domain_matches("bar.example.com", "bar.example.com")
    assert not from_domain_matches("sip.other.com", "bar.example.com")
    assert not from_domain_matches("ample.com", "bar.example.com")


def test_graph_findings_srtp_from_domain_other_apps(ca: certs.TestCa, standin: GraphStandin,
                                                    tmp_path: Path) -> None:
    standin.state.add_server(PNID1, APP_ID, "edge.sip.example.com")
    standin.state.add_server(PNID1, OTHER_APP_ID, "other.example.net")
    config = site_toml(tmp_path, standin.base_url, numbers=[NUMBERS[0]], graph=f'app_id = "{APP_ID}"',
                       number_extra={ONE: 'srtp_mode = "SDES"\nadditional_codecs = ["PCMU"]'})
    with tls_server(ca.issue("good", [SIP_DOMAIN], days=90)) as port:
        run = provision("doctor", "-c", str(config), "--connect", f"127.0.0.1:{port}",
                        "--ca-file", str(ca.certificate), "--json")
    assert run.exit_code == 1
    findings = {f["check"]: f for f in run.json()["findings"]}
    assert findings["srtp"]["level"] == "fail" and "SDES" in findings["srtp"]["cause"]
    assert findings["sip.other_apps"]["level"] == "warn"
    assert findings["sip.server"]["level"] == "fail"  # Meta calls edge.sip..., the edge serves sip...
    assert findings["bic.from_domain"]["level"] == "pass"  # sip.example.com is a parent of it
    assert findings["codecs"]["level"] == "warn"  # PCMU configured, not yet set at Meta
    assert "Meta offers OPUS, the config says OPUS + PCMU" in findings["codecs"]["cause"]
    assert findings["store"]["level"] == "fail" and "provision sync" in findings["store"]["fix"]
    assert all(f["fix"] for f in findings.values() if f["level"] != "pass")
    secret = standin.state.password(PNID1, APP_ID)
    assert secret and secret not in run.stdout


def test_app_authorization_symptom(standin: GraphStandin, tmp_path: Path) -> None:
    standin.state.numbers[PNID1].allowed_apps = {OTHER_APP_ID}
    config = site_toml(tmp_path, standin.base_url, numbers=[NUMBERS[0]], graph=f'app_id = "{APP_ID}"')
    run = provision("doctor", "-c", str(config), "--connect", "127.0.0.1:1", "--json")
    findings = {f["check"]: f for f in run.json()["findings"]}
    assert findings["graph.authorization"]["level"] == "fail"
    assert "whatsapp_business_messaging" in findings["graph.authorization"]["fix"]


def test_missing_token_is_a_finding_not_a_crash(standin: GraphStandin, tmp_path: Path) -> None:
    config = site_toml(tmp_path, standin.base_url, numbers=[NUMBERS[0]])
    run = provision("doctor", "-c", str(config), "--connect", "127.0.0.1:1", "--skip-admission",
                    "--json", token=None)
    assert run.exit_code == 1
    assert {f["check"] for f in run.json()["findings"]} == {"tcp", "graph.token"}
