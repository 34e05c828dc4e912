"""The three Kamailio set-ups of one bench run, written side by side into the run's folder.

All three listen on the same ports (one at a time), with the same workers and log level:
- `kemi`: the product, rendered by provisioning/render.py from templates/kamailio/. For the
  bench-only plain TCP listener the rendered kamailio.cfg gets one extra, labelled `listen`
  line, and app_python3 loads a labelled bench entry script that hands Kamailio the product's
  edge with one method changed: `from_meta()` also accepts that TCP listener (the product tells
  Meta from FreeSWITCH by TLS; the internal side is UDP). Nothing else of the policy differs.
- `native`: bench/edge/native.cfg.j2, the same policy in Kamailio's native language, with the
  product's own tls.cfg and dispatcher.list.
- `ceiling`: bench/edge/ceiling.cfg.j2, stateless, answers everything itself.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

import jinja2

from kemi.metrics import METRICS as PROM_METRICS
from provisioning.render import DS_ALGORITHMS, RenderOptions, render_kamailio
from provisioning.templates_dir import KEMI_DIR
from siteconfig.model import SiteConfig, split_host_port

from .site import BenchSite

HERE = Path(__file__).resolve().parent
BENCH_LISTEN_LABEL = ("# BENCH-ONLY (bench/edge): plain TCP listener for Meta's leg so stunnel is not "
                      "the bottleneck; never part of a product config.")


class SetupError(Exception):
    """A set-up could not be written (a template changed under the bench, or failed)."""


@dataclass(frozen=True)
class Setup:
    """One Kamailio configuration to load, and what the load runs against it."""

    name: str
    config: Path
    folder: Path
    uses_freeswitch: bool
    meta_transport: str  # "tcp" (bench-only plain listener) or "tls" (through stunnel)
    front_config: Path | None = None  # HAProxy in front of Meta's TLS (the 5.6 render has one)
    front_port: int = 0  # where HAProxy listens: the site's TLS port
    memory_manager: str = ""  # Kamailio's -x (shm and pkg): "" = its default (qm), fm, tlsf

    @property
    def rpc_socket(self) -> Path:
        return self.folder / "kamailio_rpc.sock"


def bench_listen_line(site: BenchSite) -> str:
    return f'{BENCH_LISTEN_LABEL}\nlisten=tcp:{site.host}:{site.ports.plain} name "bench_plain"'


def _render_product(site: BenchSite, name: str, workers: int, log_level: int) -> Path:
    return render_kamailio(site.config, site.folder / name, RenderOptions(
        workers=workers, log_level=log_level, probe_interval=0))


BENCH_ENTRY = '''"""BENCH-ONLY entry script written by bench/edge/setups.py; not the product's.

The product's edge (kemi/edge.py) unchanged, except that `from_meta()` also accepts the bench's
plain TCP listener: the product knows Meta by TLS, FreeSWITCH by the internal UDP socket.
"""

import sys

sys.path.insert(0, {kemi_parent})

import KSR  # noqa: E402

from kemi.edge import WhatsAppEdge, create_edge  # noqa: E402


class BenchPlainListenerEdge(WhatsAppEdge):
    def from_meta(self):
        return not KSR.is_UDP()


def mod_init():
    edge = create_edge({settings})
    edge.__class__ = BenchPlainListenerEdge
    return edge
'''


def kemi_setup(site: BenchSite, workers: int, log_level: int, meta_transport: str = "tcp",
               name: str = "", kemi_parent: Path | None = None) -> Setup:
    """The rendered product; with `tcp`, plus the labelled bench listener and entry script.
    `kemi_parent`: a folder whose kemi/ the entry script loads instead of this checkout's (a
    reference tree for a before/after in one run; templates and settings stay this tree's)."""
    name = name or ("kemi" if meta_transport == "tcp" else "kemi-tls")
    out = _render_product(site, name, workers, log_level)
    config = out / "kamailio.cfg"
    if meta_transport == "tcp":
        text = config.read_text(encoding="utf-8")
        internal = 'name "internal"\n'
        load = f'modparam("app_python3", "load", "{out}/wa_edge.py")'
        if text.count(internal) != 1 or text.count(load) != 1:
            raise SetupError(f"{config}: cannot find the internal listen line or the app_python3 "
                             "load line to add the bench listener; did the template change?")
        text = text.replace(internal, internal + bench_listen_line(site) + "\n")
        text = text.replace(load, "# BENCH-ONLY entry script (see its docstring)\n"
                            f'modparam("app_python3", "load", "{out}/wa_edge_bench.py")')
        config.write_text(text, encoding="utf-8")
        (out / "wa_edge_bench.py").write_text(BENCH_ENTRY.format(
            kemi_parent=json.dumps(str(kemi_parent or KEMI_DIR.parent)),
            settings=json.dumps(str(out / "edge-settings.json"))), encoding="utf-8")
    front = out.parent / "haproxy" / "haproxy.cfg"
    if meta_transport == "tls" and front.exists():
        return Setup(name, config, out, True, meta_transport, front, site.ports.tls)
    return Setup(name, config, out, True, meta_transport)


def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE)),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False)


def _common_context(site: BenchSite, out: Path, workers: int, log_level: int) -> dict[str, object]:
    cfg = site.config
    return {
        "cfg": cfg,
        "out": str(out),
        "workers": workers,
        "log_level": log_level,
        "tls_listen": f"127.0.0.1:{site.ports.tls}",
        "internal_listen": f"127.0.0.1:{site.ports.internal}",
        "bench_listen": bench_listen_line(site),
        "rpc_socket": str(out / "kamailio_rpc.sock"),
        # the product's /metrics and its counters, when the site has them (the native reference
        # bumps the same counters where the KEMI edge does)
        "metrics_listen": cfg.metrics.edge_listen or "",
        "prom_metrics": PROM_METRICS,
    }


def native_context(cfg: SiteConfig) -> dict[str, object]:
    """What the native reference needs from the site config, precomputed as the KEMI edge's
    settings are (kemi/settings.py): numbers, routes with their dispatcher algorithm, hosts."""
    algorithms = {s.id: DS_ALGORITHMS[s.algorithm] for s in cfg.freeswitch.sets}
    routes = []
    match_keys: set[str] = set()
    for route in cfg.routes:
        chosen = route.freeswitch_set or cfg.freeswitch.default_set
        match = [(key if key == "business_number" else key.lower(), value)
                 for key, value in route.match.items()]
        match_keys.update(key for key, _ in match if key != "business_number")
        routes.append({"match": match, "set": chosen, "algorithm": algorithms[chosen],
                       "context": route.context or cfg.freeswitch.default_context})
    return {
        "meta_condition": "proto == TLS || proto == TCP",
        "allowed_sources": [str(net) for net in cfg.security.allowed_sources],
        "pike": cfg.security.pike_requests_per_second > 0,
        "trusted_sources": [str(net) for net in cfg.bic.trusted_sources],
        "freeswitch_hosts": sorted({
            split_host_port(node.uri.removeprefix("sip:").split(";", 1)[0], 5060)[0].lower()
            for s in cfg.freeswitch.sets for node in s.nodes}),
        "accepted_domains": sorted({cfg.site.sip_domain.lower(),
                                    *(d.lower() for d in cfg.site.accepted_domains)}),
        "numbers_alternation": "|".join(n.digits for n in cfg.numbers),
        "auth_mode": cfg.auth.mode,
        "match_keys": sorted(match_keys),
        "routes": routes,
        "default_set": cfg.freeswitch.default_set,
        "default_algorithm": algorithms[cfg.freeswitch.default_set],
        "default_context": cfg.freeswitch.default_context,
    }


def mac_context(cfg: SiteConfig) -> dict[str, str]:
    """The route MAC's current key for the native reference: its id, and its secret's base64url
    text as crypto_hmac_sha256's (string) key (the run folder's own key file, never a site's)."""
    path = cfg.edge.in_dialog_key_file
    raw = json.loads(path.read_text(encoding="utf-8"))
    return {"mac_key_id": raw["current"], "mac_key": raw["keys"][raw["current"]]["secret"]}


def native_setup(site: BenchSite, workers: int, log_level: int) -> Setup:
    out = _render_product(site, "native", workers, log_level)  # its tls.cfg, dispatcher.list
    context = (_common_context(site, out, workers, log_level) | native_context(site.config)
               | mac_context(site.config))
    return _write(out, "native", "native.cfg.j2", context, uses_freeswitch=True)


def ceiling_setup(site: BenchSite, workers: int, log_level: int) -> Setup:
    out = _render_product(site, "ceiling", workers, log_level)  # its tls.cfg
    context = _common_context(site, out, workers, log_level) | {
        "nonce": secrets.token_hex(8), "contact_port": site.ports.plain,
        "contact_transport": "tcp"}
    return _write(out, "ceiling", "ceiling.cfg.j2", context, uses_freeswitch=False)


def _write(out: Path, name: str, template: str, context: dict[str, object],
           uses_freeswitch: bool) -> Setup:
    try:
        text = _environment().get_template(template).render(context)
    except jinja2.TemplateError as error:
        raise SetupError(f"bench/edge/{template}: {error}") from None
    config = out / f"{name}.cfg"
    config.write_text(text, encoding="utf-8")
    return Setup(name, config, out, uses_freeswitch, "tcp")
