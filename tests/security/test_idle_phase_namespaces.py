"""bench-abuse's many-source idle phase never touches the host's tables and leaves nothing behind.

- nft is refused outside a namespace of the bench's own (`lab.netns.nft_inside`), and the idle
  holders refuse a target that is not loopback unless they run inside such a namespace;
- the phase's edge gets distinct ports in its fresh namespace (free_port never repeats one);
- Ctrl-C in the middle of the attack (SIGINT to the process group, as a terminal sends it)
  ends every process the phase started, inside both namespaces, and deletes the namespaces.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.attack.idle_holders import main as holders_main
from lab.netns import NetnsError, inside_other_namespace, netns_id, nft_inside, unavailable_reason
from lab.processes import free_port
from provisioning.kamailio_binary import kamailio_available

ROOT = Path(__file__).resolve().parents[2]


def test_nft_is_refused_in_this_namespace() -> None:
    here = netns_id()
    assert here is not None
    assert not inside_other_namespace(here)
    with pytest.raises(NetnsError, match="outside a network namespace of our own"):
        nft_inside(here, "list", "ruleset")


def test_holders_refuse_a_target_off_loopback_outside_a_namespace(
        capsys: pytest.CaptureFixture[str]) -> None:
    here = netns_id() or "net:[0]"
    code = holders_main(["--target", "192.0.2.1:5061", "--sources", "127.0.0.2",
                         "--connections", "1", "--time-limit", "1", "--attempt-limit", "1",
                         "--outside-netns", here])
    assert code == 2
    assert "only target loopback" in capsys.readouterr().err


def _processes_naming(text: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def _namespaces_of(pid: int) -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return [line.split()[0] for line in listed.stdout.splitlines()
            if line.startswith(f"wsidle{pid}")]


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it is not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pids_in(namespace: str) -> list[int]:
    listed = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                            check=False)
    return [int(word) for word in listed.stdout.split()]


@pytest.mark.skipif((reason := unavailable_reason()) is not None, reason=reason or "")
@pytest.mark.skipif(not kamailio_available() or any(shutil.which(t) is None for t in
                                                    ("sipp", "stunnel4")),
                    reason="kamailio, sipp and stunnel4 are installed by 'make test'")
def test_ctrl_c_during_the_attack_leaves_no_namespace_and_no_process(tmp_path: Path) -> None:
    folder = tmp_path / "idle"
    phase = subprocess.Popen(
        [sys.executable, "-m", "bench.abuse.idle_sources", "--folder", str(folder),
         "--connections", "40", "--sources", "10", "--max-connections", "32",
         "--meta-connections", "8", "--meta-calls", "2", "--seconds", "20"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    lines: list[str] = []
    try:
        assert phase.stdout is not None
        deadline = time.monotonic() + 60
        for line in phase.stdout:
            lines.append(line)
            if "with admission:" in line and "held after" in line:
                break
            assert time.monotonic() < deadline, "".join(lines)
        names = _namespaces_of(phase.pid)
        assert len(names) == 2, "".join(lines)  # the edge's and the attackers'
        inside = [pid for name in names for pid in _pids_in(name)]
        assert len(inside) >= 5, inside  # the phase, Kamailio, HAProxy, stunnel, SIPp, attackers
        os.killpg(phase.pid, signal.SIGINT)
        rest, _ = phase.communicate(timeout=60)
        lines.append(rest)
    finally:
        if phase.poll() is None:
            os.killpg(phase.pid, signal.SIGKILL)
            phase.wait(timeout=10)
    assert _namespaces_of(phase.pid) == [], "".join(lines)
    assert _processes_naming(str(folder)) == [], "".join(lines)
    assert [pid for pid in inside if _alive(pid)] == [], "".join(lines)
    assert "Traceback" not in "".join(lines), "".join(lines)


def test_free_port_never_hands_out_a_port_twice() -> None:
    # In a fresh namespace the kernel offered the same port twice within one EdgePorts()
    # (listen.tls = listen.outbound_tls): free_port remembers what it gave.
    ports = [free_port() for _ in range(1000)]  # ~35 repeats expected without it
    assert len(set(ports)) == len(ports)
