"""The stand-in's command lives in the lab (`python -m lab.esl_standin`); `wa-esl standin` says so.

Users rehearse `wa-esl` against the stand-in, so moving it out of the product must not leave
them with a bare "No such command" or a traceback.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from esl.cli import app
from esl.client import connect_inbound
from esl.errors import AuthError


def test_wa_esl_standin_points_to_the_lab_command() -> None:
    result = CliRunner().invoke(app, ["standin", "--port", "8021"])
    assert result.exit_code == 2
    assert "python -m lab.esl_standin" in result.output
    assert "Traceback" not in result.output


def test_wa_esl_help_no_longer_lists_standin() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    assert "standin" not in result.output


async def test_lab_command_serves_the_event_socket_until_sigterm() -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "lab.esl_standin", "--port", "0", "--password", "rehearsal",
         "--max-seconds", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        ready = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 20)
        assert ready.startswith("READY 127.0.0.1:"), ready
        port = int(ready.rsplit(":", 1)[1])
        connection = await connect_inbound("127.0.0.1", port, "rehearsal", timeout=5)
        try:
            assert (await connection.api("status")).strip()
        finally:
            await connection.close()
        with pytest.raises(AuthError):
            await connect_inbound("127.0.0.1", port, "not-the-password", timeout=5)
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def test_lab_command_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "lab.esl_standin", "--port", str(port), "--max-seconds", "5"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
