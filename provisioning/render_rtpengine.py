"""OUT/rtpengine/rtpengine.conf for [media] anchor = "rtpengine" (none otherwise).

rtpengine reads an ini file of its own; rendering it from the same site config as kamailio.cfg
keeps the control socket the edge talks to and the one rtpengine listens on the same, and the
timeouts that free a leaked session next to the reason for them.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from siteconfig.model import SiteConfig

CONFIG_NAME = "rtpengine.conf"


def render_rtpengine(cfg: SiteConfig, target: Path, env: jinja2.Environment,
                     ng_listen: str) -> Path | None:
    """Write ``target/rtpengine.conf`` (temp file + rename) or remove a stale one; its path.

    ``ng_listen``: the control socket as kamailio.cfg names it (``host:port``, ``[v6]:port``).
    """
    path = target / CONFIG_NAME
    if cfg.media.anchor != "rtpengine":
        path.unlink(missing_ok=True)
        return None
    rtp = cfg.media.rtpengine
    text = env.get_template("rtpengine/rtpengine.conf.j2").render(
        rtp=rtp, ng_listen=ng_listen, path=str(path), **replication(cfg))
    target.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".conf.partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)
    return path


def interface_name(db: int) -> str:
    """The logical interface of the edge writing Redis database `db`, the same on every edge
    (a call copied from Redis names the logical interface it was bound on)."""
    return f"db{db}"


def replication(cfg: SiteConfig) -> dict[str, object]:
    """The template's Redis values ([media.rtpengine] redis and standby); redis None: off."""
    rtp = cfg.media.rtpengine
    address = rtp.redis_address()
    if address is None:
        return {"redis": None, "interfaces": [], "keyspaces": []}
    host, port, db = address

    def one(name: str, interface: str, advertise: str | None) -> str:
        return f"{name}/{interface}" + (f"!{advertise}" if advertise else "")
    interfaces = [one(interface_name(db), rtp.interface, rtp.advertise)]
    interfaces += [one(interface_name(s.redis_db), s.interface, s.advertise) for s in rtp.standby]
    shown = f"[{host}]" if ":" in host else host
    return {"redis": f"{shown}:{port}/{db}", "interfaces": interfaces,
            "keyspaces": [s.redis_db for s in rtp.standby]}
