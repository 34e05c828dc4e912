"""The edge's /metrics (xhttp_prom) scraped over HTTP after real calls through a real Kamailio;
and nothing about it on Meta's TLS socket."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kemi.metrics import BIC_OUTCOMES
from lab.edge import LAB_PASSWORD, EdgeLab
from lab.meta_standin import META_ANSWERS_BY_FLOW
from lab.metrics_scrape import Samples, scrape, total, value
from lab.sipp import start_sipp_server
from tests.conftest import INSTALLED_KAMAILIO, SECOND_NUMBER, edge_overrides, sip_header

NUMBER = "+15550100001"
WAIT = 15


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    folder = tmp_path_factory.mktemp("metrics-edge")
    with EdgeLab(folder, edge_overrides(), passwords={NUMBER: LAB_PASSWORD},
                 meta_standin=True) as lab:
        yield lab


def metrics(edge: EdgeLab) -> Samples:
    return scrape(f"http://127.0.0.1:{edge.ports.metrics}/metrics")


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def sub(folder: Path, name: str) -> Path:
    path = folder / name
    path.mkdir(exist_ok=True)
    return path


def calls(direction: str, outcome: str) -> dict[str, str]:
    return {"direction": direction, "outcome": outcome}


def test_counters_move_as_the_calls_did(edge: EdgeLab, tmp_path: Path) -> None:
    before = metrics(edge)
    # every outcome is exported from the start, at 0 if it never happened
    for outcome in BIC_OUTCOMES:
        assert ("wasip_edge_calls_total", frozenset(calls("bic", outcome).items())) in before

    fs = start_sipp_server("uic-answered", "freeswitch", sub(tmp_path, "uic"),
                           edge.ports.freeswitch[0])
    answered = edge.meta_call("uic-answered", folder=sub(tmp_path, "uic"))
    assert answered.passed, answered.errors
    assert fs.wait(WAIT) == 0, fs.log_tail()
    unknown = edge.meta_call("uic-unknown-number", business_number="+15559999999",
                             folder=sub(tmp_path, "unknown"))
    assert unknown.passed, unknown.errors

    user = edge.whatsapp_user("bic-answered", folder=sub(tmp_path, "bic"))
    bic = edge.freeswitch_call("bic-answered", folder=sub(tmp_path, "bic"))
    assert bic.passed, bic.errors
    assert user.wait(WAIT) == 0, user.log_tail()
    refusal = META_ANSWERS_BY_FLOW["no-call-permission"]
    by_meta = edge.freeswitch_call("bic-meta-no-call-permission", dialed=refusal.called_number,
                                   folder=sub(tmp_path, "refused"))
    assert by_meta.passed, by_meta.errors
    by_edge = edge.freeswitch_call("bic-refused-503", caller=SECOND_NUMBER,
                                   folder=sub(tmp_path, "no-creds"))
    assert by_edge.passed, by_edge.errors

    after = metrics(edge)
    assert moved(before, after, "wasip_edge_calls_total", **calls("uic", "answered")) == 1
    assert moved(before, after, "wasip_edge_calls_total",
                 **calls("uic", "unknown_business_number")) == 1
    assert moved(before, after, "wasip_edge_calls_total", **calls("bic", "answered")) == 1
    assert moved(before, after, "wasip_edge_calls_total",
                 **calls("bic", refusal.diagnosis)) == 1
    assert moved(before, after, "wasip_edge_calls_total",
                 **calls("bic", "no_meta_credentials")) == 1
    assert total(after, "wasip_edge_calls_total") - total(before, "wasip_edge_calls_total") == 5
    # Meta's answered call: one 407, one accepted digest
    assert moved(before, after, "wasip_edge_digest_total", result="challenged") == 1
    assert moved(before, after, "wasip_edge_digest_total", result="accepted") == 1
    # Kamailio's own statistics come along
    assert value(after, "wasip_edge_shmem_free_size") > 0
    assert value(after, "wasip_edge_core_rcv_requests_invite") >= \
        value(before, "wasip_edge_core_rcv_requests_invite") + 5
    assert ("wasip_edge_dialog_active_dialogs", frozenset()) in after
    assert ("wasip_edge_tmx_active_transactions", frozenset()) in after
    if INSTALLED_KAMAILIO.tls_faces_internet:  # 5.6's tls module keeps no statistics
        assert ("wasip_edge_tls_opened_connections", frozenset()) in after


def test_a_wrong_password_and_a_lockout_are_counted(edge: EdgeLab, tmp_path: Path) -> None:
    from provisioning.kamailio_rpc import call

    call(edge.rpc_socket, "htable.flush", "wa_authfail")
    before = metrics(edge)
    wrong = edge.meta_call("uic-wrong-password", password="not-the-password", folder=tmp_path)
    assert wrong.passed, wrong.errors
    after = metrics(edge)
    assert moved(before, after, "wasip_edge_digest_total", result="failed") >= 1
    call(edge.rpc_socket, "htable.flush", "wa_authfail")


def test_credential_reloads_are_counted_with_time_and_entries(edge: EdgeLab) -> None:
    before = metrics(edge)
    started = time.time()
    edge.reload_credentials()
    after = metrics(edge)
    assert moved(before, after, "wasip_edge_credential_reloads_total") == 1
    assert value(after, "wasip_edge_credential_reload_timestamp_seconds") >= int(started)
    assert value(after, "wasip_edge_credentials_loaded") >= 2  # ha1 and ha1_meta of one number


def test_other_paths_on_the_metrics_socket_get_404(edge: EdgeLab) -> None:
    import httpx

    response = httpx.get(f"http://127.0.0.1:{edge.ports.metrics}/", timeout=5)
    assert response.status_code == 404
    assert "wasip_edge" not in response.text


def tls_read(edge: EdgeLab, payload: bytes, wait_s: float) -> bytes:
    """Send `payload` over TLS to Meta's socket; what comes back within `wait_s`."""
    context = ssl.create_default_context(cafile=str(edge.ca.certificate))
    received = b""
    with socket.create_connection(("127.0.0.1", edge.ports.tls), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=edge.config.site.sip_domain) as tls:
        tls.sendall(payload)
        tls.settimeout(wait_s)
        try:
            while chunk := tls.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


def test_metas_tls_socket_never_serves_metrics(edge: EdgeLab) -> None:
    """The same GET that the metrics socket answers in milliseconds gets nothing on Meta's TLS
    socket (xhttp sees HTTP on every TCP/TLS socket; the edge's route answers only on its own).
    Waiting 3 s for nothing can only miss a slow leak, never fail a working edge."""
    get = b"GET /metrics HTTP/1.1\r\nHost: edge\r\nContent-Length: 0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", edge.ports.metrics), timeout=10) as plain:
        plain.sendall(get)
        assert plain.recv(65536).startswith(b"HTTP/1.1 200 OK")
    received = tls_read(edge, get, 3.0)
    assert b"HTTP/1" not in received and b"wasip_edge" not in received, received[:200]


def test_sip_on_the_metrics_socket_is_not_an_entry(edge: EdgeLab) -> None:
    """An INVITE sent to the metrics socket from a FreeSWITCH node's address gets nothing;
    then an HTTP request on the same connection still gets the metrics (it was read)."""
    invite = (b"INVITE sip:+15550123456@127.0.0.1 SIP/2.0\r\n"
              b"Via: SIP/2.0/TCP 127.0.0.1:5998;branch=z9hG4bK-metrics-sip\r\n"
              b"Max-Forwards: 70\r\nFrom: <sip:+15550100001@127.0.0.1>;tag=s1\r\n"
              b"To: <sip:+15550123456@127.0.0.1>\r\nCall-ID: metrics-sip@test\r\n"
              b"CSeq: 1 INVITE\r\nContact: <sip:x@127.0.0.1:5998;transport=tcp>\r\n"
              b"Content-Length: 0\r\n\r\n")
    get = b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", edge.ports.metrics), timeout=10) as conn:
        conn.sendall(invite + get)
        received = b""
        deadline = time.monotonic() + 10
        while b"wasip_edge_calls_total" not in received and time.monotonic() < deadline:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK"), received[:200]
    assert not any(line.startswith(b"SIP/2.0 ") for line in received.split(b"\r\n"))
    assert "metrics-sip@test" not in edge.kamailio_log()


def test_the_edge_logs_one_parseable_line_per_setup(edge: EdgeLab, tmp_path: Path) -> None:
    from esl.edge_log import read_events

    fs = start_sipp_server("uic-answered", "freeswitch", tmp_path, edge.ports.freeswitch[0])
    meta = edge.meta_call("uic-answered", folder=tmp_path)
    assert meta.passed, meta.errors
    assert fs.wait(WAIT) == 0, fs.log_tail()
    call_id = sip_header(meta.messages[0], "Call-ID")[0]
    events = [e for e in read_events(edge.kamailio_log().splitlines()) if e.call_id == call_id]
    # answered: the invite line only (FreeSWITCH's CDR says the rest); a refusal adds a final line
    (invite,) = events
    assert (invite.event, invite.get("direction")) == ("invite", "uic")
    assert invite.get("wacid") == "wacid.HBgLMTU1NTAxMjM0NTYVAgARGBIyRjE"
    assert invite.get("business_number") == NUMBER and invite.get("auth") == "digest"
    unknown = edge.meta_call("uic-unknown-number", business_number="+15559999999",
                             folder=sub(tmp_path, "unknown"))
    assert unknown.passed, unknown.errors
    refused_id = sip_header(unknown.messages[0], "Call-ID")[0]
    (final,) = [e for e in read_events(edge.kamailio_log().splitlines())
                if e.call_id == refused_id]
    assert (final.event, final.get("status"), final.get("outcome")) == (
        "final", "404", "unknown_business_number")


def test_call_show_reads_the_real_edge_log(edge: EdgeLab, tmp_path: Path) -> None:
    """`wa-esl call show` on Kamailio's own log (no CDR here): the Call-ID finds both lines."""
    import json

    from typer.testing import CliRunner

    from esl.cli import app

    fs = start_sipp_server("uic-answered", "freeswitch", tmp_path, edge.ports.freeswitch[0])
    meta = edge.meta_call("uic-answered", folder=tmp_path)
    assert meta.passed, meta.errors
    assert fs.wait(WAIT) == 0, fs.log_tail()
    call_id = sip_header(meta.messages[0], "Call-ID")[0]
    log = edge.folder / "kamailio.log"
    result = CliRunner().invoke(app, ["call", "show", call_id, "--edge-log", str(log), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert [e["event"] for e in document["edge"]] == ["invite"]
    assert document["edge"][0]["call_id"] == call_id
    assert document["cdr"] == []
