"""`provision sync` / `rotate-password` picked up by a real running Kamailio edge (no restart):
after each, Meta's side (SIPp through stunnel) is accepted with the new password and refused
with the old one."""

from __future__ import annotations

from pathlib import Path

from lab.edge import LAB_PASSWORD, EdgeLab
from lab.graph_standin import GraphStandin
from lab.sipp import start_sipp_server
from tests.provisioning.conftest import APP_ID, provision, site_toml

NUMBER, PNID = "+15550100001", "100000000000001"
FS_WAIT = 15


def edge_config(edge: EdgeLab, standin: GraphStandin, folder: Path) -> Path:
    assert edge.config.site.sip_domain == "sip.example.com"
    return site_toml(folder, standin.base_url, numbers=[(NUMBER, PNID)], graph=f'app_id = "{APP_ID}"',
                     store=edge.config.credentials.store)


def assert_accepts_only(edge: EdgeLab, folder: Path, good: str, bad: str) -> None:
    refused = edge.meta_call("uic-wrong-password", password=bad, folder=folder)
    assert refused.passed, refused.errors
    freeswitch = start_sipp_server("uic-answered", "freeswitch", folder, edge.ports.freeswitch[0])
    try:
        accepted = edge.meta_call("uic-answered", password=good, folder=folder)
        assert accepted.passed, accepted.errors
        assert freeswitch.wait(FS_WAIT) == 0, freeswitch.log_tail()
    finally:
        freeswitch.stop()


def test_sync_and_rotation_reach_the_running_edge(clean_edge: EdgeLab, standin: GraphStandin,
                                                  tmp_path: Path) -> None:
    config = edge_config(clean_edge, standin, tmp_path)
    rpc = str(clean_edge.rpc_socket)
    try:
        first = standin.state.add_server(PNID, APP_ID, "sip.example.com")
        synced = provision("sync", "-c", str(config), "--rpc-socket", rpc, "--json")
        assert synced.exit_code == 0, synced.stdout + synced.stderr
        assert synced.json()["reload"] == [{"rpc_socket": rpc, "outcome": "reloaded"}]
        assert_accepts_only(clean_edge, tmp_path, good=first, bad=LAB_PASSWORD)

        rotated = provision("rotate-password", NUMBER, "-c", str(config), "--yes", "--rpc-socket", rpc)
        assert rotated.exit_code == 0, rotated.stdout + rotated.stderr
        second = standin.state.password(PNID, APP_ID)
        assert second and second != first
        assert_accepts_only(clean_edge, tmp_path, good=second, bad=first)

        doctor = provision("doctor", "-c", str(config), "--connect", f"127.0.0.1:{clean_edge.ports.tls}",
                           "--ca-file", str(clean_edge.ca.certificate), "--rpc-socket", rpc, "--json")
        findings = {(f["check"], f["level"]) for f in doctor.json()["findings"]}
        assert ("store", "pass") in findings and ("tls.client_certificate", "pass") in findings
        assert ("tls.hostname", "pass") in findings and ("tls.chain", "pass") in findings
    finally:
        clean_edge.write_credentials({NUMBER: LAB_PASSWORD})
        clean_edge.reload_credentials()
