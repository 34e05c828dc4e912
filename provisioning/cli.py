"""The `provision` command. Each subcommand parses and prints; the work lives in the modules
it calls (config, render, credential_store, ...), as in kamcli."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from kemi.dialog_mac import KeyFileError
from provisioning.commands import register as register_graph_commands
from provisioning.in_dialog_keys import ensure_key_file, rotate_key_file
from provisioning.kamailio_features import (
    FeatureError,
    features_for,
    installed_kamailio,
    parse_version,
)
from provisioning.meta_ranges_command import register as register_meta_ranges
from provisioning.permission_command import register as register_permission
from provisioning.render import RenderError, RenderOptions, render_kamailio, target_features
from provisioning.render_freeswitch import render_freeswitch
from provisioning.render_nftables import render_nftables
from siteconfig.model import ConfigError, SiteConfig, load_config

app = typer.Typer(help="Provision and render the wa-sip WhatsApp SIP edge.",
                  no_args_is_help=True, add_completion=False)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

EXIT_CONFIG = 2
EXIT_FAILED = 1


@app.callback()
def main() -> None:
    """Provision and render the wa-sip WhatsApp SIP edge."""


def _load(config: Path) -> SiteConfig:
    try:
        return load_config(config)
    except ConfigError as error:
        err.print(f"[bold red]config error[/] in {escape(str(error.path))}:")
        for problem in error.problems:
            err.print(f"  - {escape(problem)}")
        raise typer.Exit(EXIT_CONFIG) from None


@app.command()
def render(
    config: Annotated[Path, typer.Option("--config", "-c", help="Site config (TOML).")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    workers: Annotated[int, typer.Option(min=1, max=64, help="Kamailio worker processes.")] = 4,
    probe_interval: Annotated[int, typer.Option(
        min=0, help="Seconds between OPTIONS probes of FreeSWITCH nodes; 0 = off.")] = 10,
    kamailio_version: Annotated[str | None, typer.Option(
        "--kamailio-version", help="Render for this Kamailio (5.6, 6.0, 6.1.4, ...) instead of "
        "the one installed here (the oldest supported, 5.6, when none is).")] = None,
) -> None:
    """Render the Kamailio edge into OUT/kamailio/ and the FreeSWITCH side into OUT/freeswitch/."""
    site = _load(config)
    try:
        named = features_for(parse_version(kamailio_version)) if kamailio_version else None
    except FeatureError as error:
        err.print(f"[bold red]--kamailio-version:[/] {escape(str(error))}")
        raise typer.Exit(EXIT_CONFIG) from None
    options = RenderOptions(workers=workers, probe_interval=probe_interval, kamailio=named)
    features = target_features(options)
    try:
        target = render_kamailio(site, out_dir, replace(options, kamailio=features))
        fs_target = render_freeswitch(site, out_dir)
        nft_ruleset = render_nftables(site, out_dir)
    except RenderError as error:
        err.print(f"[bold red]render failed:[/] {escape(str(error))}")
        raise typer.Exit(EXIT_FAILED) from None
    found = "named" if named else ("installed here" if installed_kamailio() else
                                   "none installed here: the oldest supported")
    out.print(f"rendered the Kamailio edge into {target}, for Kamailio {features.text} ({found})")
    for lack in features.lacks():
        out.print(f"  Kamailio {features.text}: {escape(lack)}")
    out.print(f"check it with: kamailio -c -f {target / 'kamailio.cfg'}")
    front = target.parent / "haproxy" / "haproxy.cfg"
    if front.exists():
        out.print(f"rendered HAProxy, which terminates Meta's TLS for this Kamailio, into "
                  f"{front.parent}: check it with haproxy -c -f {front}")
    out.print(f"rendered the FreeSWITCH configuration into {fs_target}: start FreeSWITCH with "
              f"-conf {fs_target} (it includes nothing else)")
    if nft_ruleset is not None:
        out.print(f"rendered the admission rules for the Meta-facing TLS port into {nft_ruleset}: "
                  f"load them with nft -f {nft_ruleset} (table inet wa_sip only)")
    _ensure_in_dialog_key(site)


def _ensure_in_dialog_key(site: SiteConfig) -> None:
    """The edge does not start without its in-dialog MAC key file: say so when it is missing
    here (render writes only into --out; `provision rotate-in-dialog-key` creates the file)."""
    path = site.edge.in_dialog_key_file
    if not path.exists():
        out.print(f"[yellow]no in-dialog key file {escape(str(path))}[/]: Kamailio will not start "
                  "without it; create it with `provision rotate-in-dialog-key -c CONFIG` (or copy "
                  "the site's file there: 0600, owned by Kamailio's user)")


@app.command("rotate-in-dialog-key")
def rotate_in_dialog_key(
    config: Annotated[Path, typer.Option("--config", "-c", help="Site config (TOML).")],
    keep_hours: Annotated[int | None, typer.Option(
        min=1, help="How long the old key still verifies (default: "
        "edge.in_dialog_key_keep_hours).")] = None,
) -> None:
    """Create the in-dialog MAC key file (0600) when missing, else add a new current key; calls
    signed with the old one keep working while it verifies. Each edge's workers pick the file
    up within a second; copy it to every edge."""
    site = _load(config)
    path = site.edge.in_dialog_key_file
    hours = keep_hours if keep_hours is not None else site.edge.in_dialog_key_keep_hours
    try:
        if ensure_key_file(path):
            out.print(f"created the in-dialog key file {path} (0600) with its first key: copy it "
                      "to every edge of the site, owned by Kamailio's user")
            return
        rotation = rotate_key_file(path, hours * 3600.0)
    except (KeyFileError, OSError) as error:
        err.print(f"[bold red]rotation refused:[/] {escape(str(error))}")
        raise typer.Exit(EXIT_FAILED) from None
    out.print(f"{path}: new current key {rotation.key_id}; "
              f"{', '.join(rotation.kept) or 'no older key'} verifying for {hours} h more. "
              "Copy the file to every other edge of the site now.")


# apply, sync, rotate-password, status, doctor: the Graph-facing commands (commands.py).
register_graph_commands(app)
# meta-ranges refresh: Meta's address ranges for the admission rules (meta_ranges_command.py).
register_meta_ranges(app)
register_permission(app)


if __name__ == "__main__":
    app()
