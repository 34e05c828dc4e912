"""The whole bundle on loopback: the Kamailio edge, a real FreeSWITCH and `wa-esl`, with Meta's
two sides played (SIPp through stunnel toward the edge; the Meta stand-in behind it).

`BundleLab` renders one site config (the user's file, ports and paths moved onto loopback) for
all three: the edge dispatches user-initiated calls to FreeSWITCH's `wa-edge` profile, whose
dialplan hands them to `wa-esl` (`socket ... async full`); business-initiated calls leave
through the profile's gateway toward the edge. `wa-esl` runs as users run it, a separate
process started with `wa-esl run --config FILE`, and `originate()` is `wa-esl originate`.
The lab command and the tests through the edge both use it; every process it starts is stopped
by its own PID when it stops.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esl.cdr import CallRecord, CdrStore
from lab.edge import EXAMPLE_CONFIG, LAB_PASSWORD, EdgeLab, merge
from lab.freeswitch import FreeswitchLab, FreeswitchPorts, dtls_certificate, loopback_overrides
from lab.processes import LabError, LabParty, ManagedProcess, free_port
from lab.sipp import SippResult
from lab.site_toml import write_site_toml

ESL_PASSWORD = "lab-Esl-Secret-7"
READY_TIMEOUT_S = 30.0
CDR_TIMEOUT_S = 20.0


def wa_esl_command() -> list[str]:
    """The installed `wa-esl` console script beside this interpreter (the venv's)."""
    script = Path(sys.executable).with_name("wa-esl")
    if not script.exists():
        raise LabError(f"{script} is missing: run 'make python-deps' (pip install -e .)")
    return [str(script)]


class WaEsl(ManagedProcess):
    """`wa-esl run --config FILE` in the background, its log in `log`."""

    def __init__(self, config_file: Path, log: Path) -> None:
        super().__init__("wa-esl", [*wa_esl_command(), "run", "--config", str(config_file)], log)
        self.config_file = config_file

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for_line(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        """Wait until the log (from byte `start`) has a line matching `pattern`."""
        compiled = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            found = compiled.search(self.text()[start:])
            if found:
                return found
            if not self.running():
                raise LabError(f"wa-esl exited; see {self.log}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise LabError(f"wa-esl logged no line matching {pattern!r} within "
                               f"{timeout:.0f} s; see {self.log}")
            time.sleep(0.05)

    def log_size(self) -> int:
        return len(self.text())

    def wait_ready(self, timeout: float = READY_TIMEOUT_S, start: int = 0) -> None:
        """Its inbound Event Socket connection is up (the outbound server listens before)."""
        self.wait_for_line(r"inbound ESL connection to \S+ up", timeout, start)


@dataclass(frozen=True)
class MetaCall:
    """A user-initiated call Meta placed: the wacid it carried and what SIPp exchanged."""

    wacid: str
    result: SippResult


@dataclass(frozen=True)
class Originated:
    """What `wa-esl originate` printed and its exit code (0 answered, 3 refused)."""

    exit_code: int
    output: str

    @property
    def call_uuid(self) -> str | None:
        found = re.search(r"answered: call ([0-9a-f-]{36})", self.output)
        return found[1] if found else None


class BundleLab(LabParty):
    """Edge + Meta stand-in + FreeSWITCH + wa-esl in `folder`; use as a context manager."""

    def __init__(self, folder: Path, config_path: Path = EXAMPLE_CONFIG,
                 overrides: dict[str, Any] | None = None, dtls_pem: Path | None = None,
                 log_level: int = 2) -> None:
        self.folder = folder
        self.fs_ports = FreeswitchPorts()
        switch = loopback_overrides(self.fs_ports, "edge", ESL_PASSWORD)
        del switch["listen"]  # the edge lab sets its own internal address, the switch's peer
        # the direct path (FreeSWITCH terminates Meta's media) unless `overrides` name another
        switch = merge(switch, {"media": {"anchor": "freeswitch"}, "esl": {
            "cdr_db": str(folder / "cdr.sqlite3"),
            "metrics_listen": f"127.0.0.1:{free_port()}",  # wa-esl's /metrics
            "reconnect": {"initial_s": 0.1, "max_s": 1.0}}})
        self.edge = EdgeLab(folder, overrides=merge(switch, overrides or {}),
                            config_path=config_path, meta_standin=True, log_level=log_level)
        self.config = self.edge.config
        self.config_file = folder / "site.toml"
        self.dtls_pem = dtls_pem or dtls_certificate(folder / "dtls" / "dtls-srtp.pem")
        self.freeswitch = FreeswitchLab(folder / "freeswitch", self.config, self.dtls_pem)
        self.wa_esl: WaEsl | None = None

    def start(self) -> None:
        write_site_toml(self.config_file, self.edge.raw_config)
        self.edge.start()
        self.freeswitch.start()
        self.start_wa_esl()

    def start_wa_esl(self) -> None:
        self.wa_esl = WaEsl(self.config_file, self.folder / "wa-esl.log")
        self.wa_esl.start()
        self.wa_esl.wait_ready()

    def stop(self) -> None:
        if self.wa_esl is not None:
            self.wa_esl.stop()
        self.freeswitch.stop()
        self.edge.stop()

    # ---- what happened ------------------------------------------------------------------

    def records(self) -> list[CallRecord]:
        store = CdrStore(self.config.esl.cdr_db)
        try:
            return store.recent(limit=200)
        finally:
            store.close()

    def cdr(self, *, wacid: str | None = None, call_uuid: str | None = None,
            timeout: float = CDR_TIMEOUT_S, state: str = "ended") -> CallRecord:
        """The CDR of one call (by wacid or FreeSWITCH UUID), once it is in `state`."""
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.records()
                     if (wacid is None or r.wacid == wacid)
                     and (call_uuid is None or r.call_uuid == call_uuid)]
            if found and found[0].state == state:
                return found[0]
            if time.monotonic() > deadline:
                raise LabError(f"no {state} CDR for {wacid or call_uuid} within {timeout:.0f} s; "
                               f"last seen: {found[:1]}")
            time.sleep(0.1)

    # ---- actions ------------------------------------------------------------------------

    def uic(self, business_number: str, *, payload: str = "order-1234",
            ruri_params: str | None = None, hold_ms: int = 1000, duration_s: int = 2,
            password: str = LAB_PASSWORD, folder: Path | None = None,
            timeout_s: int = 30, wacid: str | None = None,
            rtp_port: int | None = None) -> MetaCall:
        """Meta places a user-initiated call to `business_number` (an offer of the number's
        SRTP mode: sipp-scenarios/uic-freeswitch-<mode>/meta.xml), holds it `hold_ms` after
        its ACK, then hangs up saying the call lasted `duration_s`. Request-URI user
        parameters: the number's configured ones unless `ruri_params` (";k=v...") is given."""
        number = next((n for n in self.config.numbers if n.business_number == business_number),
                      None)
        if number is None:
            raise LabError(f"{business_number} is not a number of the lab's site config")
        if ruri_params is None:
            ruri_params = "".join(f";{k}={v}" for k, v in number.request_uri_user_params.items())
        wacid = wacid or f"wacid.lab{uuid.uuid4().hex[:20]}"
        result = self.edge.meta_call(
            f"uic-freeswitch-{number.srtp_mode.lower()}", password=password,
            business_number=business_number, ruri_params=ruri_params, folder=folder,
            timeout_s=timeout_s, extra=["-d", str(hold_ms)],
            keys={"wacid": wacid, "cta_payload": payload, "duration": str(duration_s),
                  "rtp_port": str(rtp_port or free_port())})
        return MetaCall(wacid, result)

    def originate(self, business_number: str, user: str, ring_s: int = 20,
                  force: bool = True) -> Originated:
        """`wa-esl originate --config FILE --from NUMBER --to USER` as a user types it.

        ``force`` (the lab's calls about SIP and media): without the call-permission
        pre-flight (esl/preflight.py), which needs a Graph stand-in these calls do not run."""
        argv = [*wa_esl_command(), "originate", "--config", str(self.config_file),
                "--from", business_number, "--to", user, "--timeout", str(ring_s),
                *(["--force"] if force else [])]
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=ring_s + 40,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise LabError(f"wa-esl originate did not finish within {ring_s + 40} s") from None
        return Originated(done.returncode, (done.stdout + done.stderr).strip())

    def api(self, command: str) -> str:
        """One FreeSWITCH API command over its Event Socket."""
        return self.freeswitch.api(command)

    def channel_variables(self, call_uuid: str) -> dict[str, str]:
        """Every variable of a live channel (`uuid_dump ... json`), `variable_` prefix removed."""
        dump = self.api(f"uuid_dump {call_uuid} json")
        try:
            data = json.loads(dump)
        except json.JSONDecodeError:
            raise LabError(f"uuid_dump {call_uuid}: {dump.strip()[:200]}") from None
        return {k.removeprefix("variable_"): str(v) for k, v in data.items()
                if k.startswith("variable_")}
