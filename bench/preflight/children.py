"""The two stand-ins, each in its own process (so neither shares this interpreter's lock).

Both print ``READY <address>`` once they serve and stop by themselves after ``max_seconds``:
the Graph stand-in also when its stdin closes, the Event Socket stand-in on SIGTERM.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 30.0
APP_ID = "700000000000001"
TOKEN = "bench-token-not-a-secret"
ESL_PASSWORD = "ClueCon"


@dataclass
class Child:
    """A started stand-in: its process and the address it printed."""

    name: str
    process: subprocess.Popen[str]
    address: str
    graph: bool  # the Graph stand-in stops when its stdin closes, the other on SIGTERM


def _start(name: str, argv: list[str], graph: bool) -> Child:
    process = subprocess.Popen([sys.executable, "-m", *argv], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith("READY "):
            return Child(name, process, line.split()[1], graph)
        if not line and process.poll() is not None:
            break
    process.kill()
    process.wait(timeout=5)
    raise SystemExit(f"bench: the {name} did not start")


def token_file(folder: Path) -> Path:
    path = folder / "graph-token"
    path.write_text(TOKEN, encoding="utf-8")
    os.chmod(path, 0o600)
    return path


def start_graph(name: str, token: Path, *, granted_users: int, rate: float = 0.0,
                burst: int = 10, max_seconds: float = 300.0) -> Child:
    """``python -m lab.graph_standin`` with one seeded number; ``rate`` 0: no limit. Past the
    limit it answers as Graph does on call_permissions: HTTP 400, error 613."""
    argv = ["lab.graph_standin", "--numbers", "1", "--app-id", APP_ID, "--token-file",
            str(token), "--granted-users", str(granted_users), "--max-seconds", str(max_seconds)]
    if rate > 0:
        argv += ["--rate", str(rate), "--burst", str(burst), "--rate-code", "613",
                 "--rate-status", "400", "--retry-after", "1"]
    return _start(name, argv, graph=True)


def start_esl(max_seconds: float = 300.0) -> Child:
    """``python -m lab.esl_standin`` on a free loopback port; Meta answers every BIC."""
    return _start("Event Socket stand-in", ["lab.esl_standin", "--port", "0", "--password",
                                            ESL_PASSWORD, "--max-seconds", str(max_seconds)],
                  graph=False)


def stop(child: Child) -> dict[str, int]:
    """Stop it; the Graph stand-in's ``STATS key=value`` counters ({} for the other)."""
    process = child.process
    assert process.stdin is not None and process.stdout is not None
    if child.graph:
        process.stdin.close()
    else:
        process.terminate()
    try:
        rest = process.stdout.read()
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)
        rest = ""
    line = next((line for line in rest.splitlines() if line.startswith("STATS ")), "STATS")
    return {key: int(value) for key, _, value in
            (item.partition("=") for item in line.split()[1:]) if value.isdigit()}
