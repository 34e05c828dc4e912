"""Render the FreeSWITCH side of the bundle from templates/freeswitch/ into OUT/freeswitch/.

A complete configuration folder: `freeswitch -conf OUT/freeswitch` starts a stock FreeSWITCH
with it and nothing else. Same contract as the Kamailio side: everything renders and passes the
checks (well-formed XML, every include rendered, only sofia parameter names FreeSWITCH knows)
before any file is swapped in. The Event Socket
file holds the ESL password, so it is written 0600.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from esl.fsconfig import TEMPLATES, check_complete, check_rendered_xml, freeswitch_context
from esl.site import controller_settings, freeswitch_site
from provisioning.render import RenderError, replace_folder, template_environment
from siteconfig.model import SiteConfig, split_host_port

SECRET_FILES = frozenset({"autoload_configs/event_socket.conf.xml"})


def render_freeswitch(cfg: SiteConfig, out: Path) -> Path:
    """Write the whole configuration folder OUT/freeswitch/ (freeswitch.xml and what it
    includes, see esl.fsconfig.TEMPLATES); return the folder."""
    target = out.resolve() / "freeswitch"
    profile = cfg.freeswitch.profile
    profile_port, port_key = (profile.tls_port, "tls_port") if profile.tls else (profile.sip_port, "sip_port")
    stray = [node.uri for s in cfg.freeswitch.sets for node in s.nodes
             if _node_port(node.uri) != profile_port]
    if stray:
        raise RenderError(
            f"freeswitch.sets: nodes {', '.join(stray)} do not use the rendered profile's port "
            f"{profile_port} (freeswitch.profile.{port_key}); the edge would send calls nowhere")
    try:
        context = freeswitch_context(controller_settings(cfg), freeswitch_site(cfg))
    except ValueError as error:
        raise RenderError(str(error)) from None
    env = template_environment()
    files: dict[str, str] = {}
    for name in TEMPLATES:
        try:
            files[name] = env.get_template(f"freeswitch/{name}.j2").render(context)
        except jinja2.TemplateError as error:
            raise RenderError(f"template freeswitch/{name}.j2: {error}") from None
    problems = [p for name, text in files.items() for p in check_rendered_xml(name, text)]
    problems += check_complete(files)
    if problems:
        raise RenderError("rendered FreeSWITCH files failed their checks: " + "; ".join(problems))
    replace_folder(target, files, private=SECRET_FILES)
    return target


def _node_port(uri: str) -> int:
    return split_host_port(uri.removeprefix("sip:").split(";", 1)[0], 5060)[1]
