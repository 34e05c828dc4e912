"""Kamailio's JSON-RPC over its datagram socket (jsonrpcs `dgram_socket`).

Provisioning uses it to make the running edge re-read the credential store
(`htable.reload wa_creds`) without a restart, and tests use it to read the edge's state.
"""

from __future__ import annotations

import itertools
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

_ids = itertools.count(1)


class RpcError(Exception):
    """Kamailio did not answer, or answered with a JSON-RPC error."""


def call(socket_path: Path, method: str, *params: str | int, timeout: float = 5.0) -> Any:
    """Send one JSON-RPC request and return its `result`."""
    request = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": next(_ids)}
    with tempfile.TemporaryDirectory(prefix="wa-sip-rpc-") as scratch:
        reply_path = os.path.join(scratch, "reply.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(reply_path)
            sock.settimeout(timeout)
            try:
                sock.sendto(json.dumps(request).encode(), str(socket_path))
                data = sock.recv(1 << 20)
            except FileNotFoundError:
                raise RpcError(f"no Kamailio RPC socket at {socket_path}: is the edge running?") from None
            except (TimeoutError, OSError) as error:
                raise RpcError(f"Kamailio RPC {method} at {socket_path}: {error}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise RpcError(f"Kamailio RPC {method}: unreadable reply {data[:80]!r}") from None
    if "error" in reply:
        problem = reply["error"]
        raise RpcError(f"Kamailio RPC {method}: {problem.get('message', problem)}")
    return reply.get("result")


def reload_credentials(socket_path: Path, table: str = "wa_creds") -> None:
    """Make every Kamailio worker see the store's current content (and count it, see below)."""
    call(socket_path, "htable.reload", table)
    note_credential_reload(socket_path, table)


def note_credential_reload(socket_path: Path, table: str = "wa_creds") -> None:
    """Tell the edge's metrics about a reload: count, time, entries now in the table.

    The reload happens in Kamailio's RPC process, where no script runs, so whoever asked for
    it reports it. An edge without metrics (metrics.edge_listen unset) has no xhttp_prom: its
    "command not found" is expected and ignored; the reload itself already succeeded.
    """
    try:
        stats = call(socket_path, "htable.stats")
        tables = stats if isinstance(stats, list) else [stats]
        entries = next((int(t.get("all", 0)) for t in tables
                        if isinstance(t, dict) and t.get("name") == table), 0)
        call(socket_path, "xhttp_prom.counter_inc", "credential_reloads_total", 1)
        call(socket_path, "xhttp_prom.gauge_set", "credential_reload_timestamp_seconds",
             int(time.time()))
        call(socket_path, "xhttp_prom.gauge_set", "credentials_loaded", entries)
    except RpcError:
        return
