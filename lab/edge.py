"""A running wa-sip edge on loopback: rendered from the site config, real Kamailio, real TLS.

`EdgeLab` starts from examples/site.toml, moves sockets, certificates and the credential store
into a scratch folder, renders with `provision render`'s own code and starts Kamailio and the
stunnel that plays Meta's TLS client. The lab command and the tests both use it.
"""

from __future__ import annotations

import copy
import shutil
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.certs import TestCa, make_test_ca
from lab.meta_standin import META_HOST, WHATSAPP_USER, MetaStandin, StandinPorts
from lab.processes import LabError, LabParty, ManagedProcess, free_port, wait_for_tcp
from lab.rtpengine import media_port_range, start_rtpengine
from lab.sipp import SippResult, SippServer, run_sipp_client, start_sipp_server
from lab.stunnel import stunnel_client
from lab.tls_front import start_haproxy
from provisioning.credential_store import credential_for, open_store
from provisioning.in_dialog_keys import ensure_key_file
from provisioning.kamailio_binary import KamailioNotFound, kamailio_binary
from provisioning.kamailio_rpc import RpcError, call, reload_credentials
from provisioning.render import RenderOptions, render_kamailio, target_features, tls_front
from siteconfig.model import SiteConfig

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "examples" / "site.toml"
LAB_PASSWORD = "lab-sip-password-1"
META_USER = "+15550123456"


@dataclass
class EdgePorts:
    tls: int = field(default_factory=free_port)  # Meta's TLS port: Kamailio's, or HAProxy's
    front_backend: int = field(default_factory=free_port)  # Kamailio's TCP socket behind HAProxy
    outbound_tls: int = field(default_factory=free_port)  # Kamailio's TLS toward Meta (HAProxy)
    internal: int = field(default_factory=free_port)
    meta_client: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)  # Kamailio's /metrics (xhttp_prom)
    freeswitch: tuple[int, int] = field(default_factory=lambda: (free_port(), free_port()))
    meta: StandinPorts = field(default_factory=lambda: StandinPorts(
        free_port(), free_port(), free_port(), free_port()))


def merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `changes` into a copy of `base` (tables merge, other values replace)."""
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


class EdgeLab(LabParty):
    """Kamailio + Meta's TLS client leg, in `folder`; use as a context manager.

    With `meta_standin`, Meta's own edge is played too (stunnel + a second Kamailio, see
    lab/meta_standin) for business-initiated calls; the edge's `bic.meta_server` always points
    at its loopback port, so the lab never reaches the real Meta.
    """

    def __init__(self, folder: Path, overrides: dict[str, Any] | None = None,
                 config_path: Path = EXAMPLE_CONFIG, passwords: dict[str, str] | None = None,
                 log_level: int = 2, meta_standin: bool = False,
                 ports: EdgePorts | None = None) -> None:
        self.folder = folder
        self.ports = ports or EdgePorts()  # given: overrides may name them (listen.tls)
        self.overrides = overrides or {}
        self.config_path = config_path
        self.log_level = log_level
        self.processes: list[ManagedProcess] = []
        self.raw_config: dict[str, Any] = {}  # the site config as a dict, as validated
        folder.mkdir(parents=True, exist_ok=True)
        self.ca: TestCa = make_test_ca(folder / "ca")
        self.config = self._site_config()
        self.passwords = passwords if passwords is not None else {
            n.business_number: LAB_PASSWORD for n in self.config.numbers}
        self.kamailio: ManagedProcess | None = None
        self.haproxy: ManagedProcess | None = None  # when HAProxy terminates Meta's TLS (5.6)
        self.rtpengine: ManagedProcess | None = None  # when [media] anchor = "rtpengine"
        self.meta: MetaStandin | None = None
        if meta_standin:
            self.meta = MetaStandin(
                folder / "meta", self.ports.meta, self.ca.issue("meta", [META_HOST]),
                {n.business_number: n.phone_number_id for n in self.config.numbers},
                self.config.site.sip_domain, self.passwords)

    # ---- configuration --------------------------------------------------------------------

    def _site_config(self) -> SiteConfig:
        try:
            raw = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise LabError(f"{self.config_path}: {error}") from None
        domain = merge(raw, self.overrides)["site"]["sip_domain"]
        edge_leaf = self.ca.issue("edge", [domain])
        fs1, fs2 = self.ports.freeswitch
        media_min, media_max = media_port_range()
        loopback = {
            "tls": {"certificate": str(edge_leaf.certificate),
                    "private_key": str(edge_leaf.private_key),
                    "ca_list": str(self.ca.certificate)},
            "listen": {"tls": f"127.0.0.1:{self.ports.tls}",
                       "internal": f"127.0.0.1:{self.ports.internal}",
                       "front_backend": f"127.0.0.1:{self.ports.front_backend}",
                       "outbound_tls": f"127.0.0.1:{self.ports.outbound_tls}"},
            "credentials": {"store": f"sqlite:///{self.folder / 'credentials.sqlite'}"},
            "freeswitch": {"sets": [{"id": 1, "algorithm": "priority", "nodes": [
                {"uri": f"sip:127.0.0.1:{fs1}", "priority": 10},
                {"uri": f"sip:127.0.0.1:{fs2}", "priority": 5}]}]},
            "bic": {"meta_server": f"127.0.0.1:{self.ports.meta.public}"},
            "metrics": {"edge_listen": f"127.0.0.1:{self.ports.metrics}"},
            # the site's in-dialog MAC keys: one file per lab edge, kept across its restarts
            "edge": {"in_dialog_key_file": str(self.folder / "in-dialog-keys.json")},
            # with anchor = "rtpengine" (the default) each lab edge's rtpengine gets its own
            # control port and media ports, so edges of parallel tests never share one
            "media": {"rtpengine": {"ng_listen": f"127.0.0.1:{free_port()}",
                                    "interface": "127.0.0.1",
                                    "port_min": media_min, "port_max": media_max}},
        }
        self.raw_config = merge(merge(raw, loopback), self.overrides)
        return SiteConfig.model_validate(self.raw_config)

    @property
    def rpc_socket(self) -> Path:
        return self.folder / "out" / "kamailio" / "kamailio_rpc.sock"

    # ---- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        for tool in ("sipp", "stunnel4"):
            if shutil.which(tool) is None:
                raise LabError(f"{tool} is not installed: run 'make lab' or 'make test' as root")
        try:
            kamailio_binary()
        except KamailioNotFound as error:
            raise LabError(str(error)) from None
        self.write_credentials(self.passwords)
        ensure_key_file(self.config.edge.in_dialog_key_file)
        options = RenderOptions(workers=2, probe_interval=0, log_level=self.log_level)
        rendered = render_kamailio(self.config, self.folder / "out", options)
        front = tls_front(self.config, target_features(options))
        run_dir = self.folder / "run"
        run_dir.mkdir(exist_ok=True)
        self.kamailio = ManagedProcess("kamailio", [
            kamailio_binary(), "-f", str(rendered / "kamailio.cfg"), "-DD", "-E", "-m", "64", "-M", "8",
            "-Y", str(run_dir), "-P", str(run_dir / "kamailio.pid")], self.folder / "kamailio.log")
        if self.config.media.anchor == "rtpengine":
            self.rtpengine = start_rtpengine(self.folder / "out" / "rtpengine" / "rtpengine.conf",
                                             self.config.media.rtpengine.ng_listen, run_dir)
            self.processes.append(self.rtpengine)
        self.processes.append(self.kamailio.start())
        self._wait_for_kamailio(tls=front == "kamailio")
        if front == "haproxy":
            self.haproxy = start_haproxy(self.folder / "out" / "haproxy" / "haproxy.cfg",
                                         self.ports.tls, self.folder / "haproxy.log")
            self.processes.append(self.haproxy)
        self.processes.append(stunnel_client(
            self.folder, "meta-to-edge", self.ports.meta_client, self.ports.tls,
            self.ca.certificate, self.config.site.sip_domain))
        if self.meta is not None:
            self.meta.start()

    def _wait_for_kamailio(self, tls: bool) -> None:
        assert self.kamailio is not None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if not self.kamailio.running():
                raise LabError("kamailio exited at start:\n" + self.kamailio.log_tail())
            try:
                call(self.rpc_socket, "core.uptime", timeout=0.5)
                break
            except RpcError:
                time.sleep(0.1)
        else:
            raise LabError(f"kamailio did not answer RPC within 20 s; see {self.kamailio.log}")
        if tls:
            wait_for_tcp("127.0.0.1", self.ports.tls, 10, "kamailio TLS", self.kamailio.log)

    def stop(self) -> None:
        if self.meta is not None:
            self.meta.stop()
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    # ---- actions ------------------------------------------------------------------------

    def write_credentials(self, passwords: dict[str, str]) -> None:
        store = open_store(self.config.credentials.sqlite_path())
        try:
            store.put_many([credential_for(number, password, self.config.site.sip_domain)
                            for number, password in passwords.items()],
                           self.config.site.sip_domain)
        finally:
            store.close()

    def reload_credentials(self) -> None:
        reload_credentials(self.rpc_socket)  # as provision sync does (metrics noted too)

    def meta_call(self, flow: str, password: str = LAB_PASSWORD,
                  business_number: str | None = None, ruri_params: str = "",
                  keys: dict[str, str] | None = None, timeout_s: int = 20,
                  folder: Path | None = None, extra: list[str] | None = None,
                  client_port: int | None = None) -> SippResult:
        """Play Meta's side of `flow` (sipp-scenarios/<flow>/meta.xml) through TLS; `extra`:
        more SIPp arguments (`-d MS` for a scenario's bare `<pause/>`); `client_port`: another
        stunnel client than the lab's (meta_client_from: Meta from another address)."""
        number = business_number or self.config.numbers[0].business_number
        if not ruri_params and number == self.config.numbers[0].business_number:
            ruri_params = "".join(f";{k}={v}" for k, v in
                                  self.config.numbers[0].request_uri_user_params.items())
        all_keys = {
            "ruri_user": number + ruri_params,
            "business_number": number,
            "sip_domain": self.config.site.sip_domain,
            "meta_user": META_USER,
            "edge_route": (f"<sip:127.0.0.1:{self.ports.tls};transport=tls;r2=on;lr>,"
                           f"<sip:127.0.0.1:{self.ports.internal};r2=on;lr>"),
            **(keys or {}),
        }
        digits = number.removeprefix("+")
        return run_sipp_client(flow, "meta", folder or self.folder,
                               client_port or self.ports.meta_client,
                               free_port(),
                               keys=all_keys, timeout_s=timeout_s,
                               extra=["-au", digits, "-ap", password,
                                      # digest uri = the request URI, as Meta sends it
                                      "-auth_uri", f"{number}{ruri_params}@"
                                      f"{self.config.site.sip_domain};transport=tls",
                                      *(extra or [])])

    def meta_client_from(self, source: str) -> int:
        """One more stunnel client toward the edge's TLS port, connecting from `source` (a
        loopback address): Meta from another address. Stopped with the lab; returns the port
        SIPp sends to (meta_call's client_port)."""
        port = free_port()
        name = "meta-from-" + source.replace(".", "-")
        self.processes.append(stunnel_client(self.folder, name, port, self.ports.tls,
                                             self.ca.certificate, self.config.site.sip_domain,
                                             source=source))
        return port

    def whatsapp_user(self, flow: str, folder: Path | None = None,
                      timeout_s: int = 30) -> SippServer:
        """The WhatsApp user behind the Meta stand-in: sipp-scenarios/<flow>/whatsapp.xml (UAS)."""
        return start_sipp_server(flow, "whatsapp", folder or self.folder,
                                 self.ports.meta.whatsapp_user, timeout_s=timeout_s,
                                 keys={"whatsapp_user": WHATSAPP_USER})

    def freeswitch_call(self, flow: str, dialed: str = WHATSAPP_USER,
                        caller: str | None = None, from_host: str | None = None,
                        keys: dict[str, str] | None = None, timeout_s: int = 20,
                        folder: Path | None = None, local_port: int | None = None) -> SippResult:
        """Play FreeSWITCH placing a business-initiated call: sipp-scenarios/<flow>/freeswitch.xml.

        It sends from the first FreeSWITCH node's address (a dispatcher member) unless
        `local_port` says otherwise, to the edge's internal socket, as a FreeSWITCH gateway
        pointing at the edge would: request URI user = what the agent dialled, From host = the
        edge's address.
        """
        edge = f"127.0.0.1:{self.ports.internal}"
        all_keys = {
            "dialed": dialed,
            "caller": caller or self.config.numbers[0].business_number,
            "from_host": from_host or edge,
            "edge": edge,
            "whatsapp_user": WHATSAPP_USER,
            **(keys or {}),
        }
        return run_sipp_client(flow, "freeswitch", folder or self.folder, self.ports.internal,
                               local_port or self.ports.freeswitch[0], keys=all_keys,
                               timeout_s=timeout_s, transport="u1")

    def kamailio_log(self) -> str:
        return self.folder.joinpath("kamailio.log").read_text(errors="replace")

    def haproxy_log(self) -> str:
        """HAProxy's own log ("" when Kamailio terminates Meta's TLS)."""
        path = self.folder / "haproxy.log"
        return path.read_text(errors="replace") if path.exists() else ""
