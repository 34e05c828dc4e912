"""`provision meta-ranges refresh`: rewrite the site's list of Meta's ranges (thin, as in kamcli;
the work is in meta_ranges_refresh.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from provisioning.meta_ranges_refresh import DEFAULT_TIMEOUT_S, RefreshError, refresh_ranges
from siteconfig.model import ConfigError, load_config

EXIT_FAILED, EXIT_CONFIG = 1, 2

meta_ranges_app = typer.Typer(help="Meta's address ranges for the nftables admission rules.",
                              no_args_is_help=True, add_completion=False)
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)


def _target(config: Path | None, to: Path | None) -> Path:
    if to is not None:
        return to
    if config is None:
        err.print("[bold red]give --config (its security.admission.meta_ranges_file) or --to FILE[/]")
        raise typer.Exit(EXIT_CONFIG)
    try:
        admission = load_config(config).security.admission
    except ConfigError as error:
        err.print(f"[bold red]config error[/] in {escape(str(error.path))}:")
        for problem in error.problems:
            err.print(f"  - {escape(problem)}")
        raise typer.Exit(EXIT_CONFIG) from None
    if admission.meta_ranges is not None:
        err.print("[bold red]security.admission.meta_ranges is set inline:[/] refresh writes a file; "
                  "replace it with meta_ranges_file = \"/etc/wa-sip/meta-ranges.txt\"")
        raise typer.Exit(EXIT_CONFIG)
    if admission.meta_ranges_file is None:
        err.print("[bold red]security.admission.meta_ranges_file is not set:[/] the shipped list is "
                  "part of the bundle and is not rewritten; set meta_ranges_file (e.g. "
                  "/etc/wa-sip/meta-ranges.txt) and refresh again")
        raise typer.Exit(EXIT_CONFIG)
    return admission.meta_ranges_file


@meta_ranges_app.command()
def refresh(
    source: Annotated[str, typer.Option("--from", help="http(s):// URL, file:// URL or path of the "
                                        "new list: one CIDR a line, RADB whois output or RIPEstat JSON.")],
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Site config (TOML).")] = None,
    to: Annotated[Path | None, typer.Option(
        "--to", help="Write here instead of security.admission.meta_ranges_file.")] = None,
    allow_shrink: Annotated[bool, typer.Option(
        "--allow-shrink", help="Accept a list less than half as long as the current one.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds for the download.")] = DEFAULT_TIMEOUT_S,
) -> None:
    """Replace the site's list of Meta's ranges (atomically; nothing is written on any error)."""
    target = _target(config, to)
    try:
        outcome = refresh_ranges(source, target, allow_shrink=allow_shrink, timeout=timeout)
    except RefreshError as error:
        err.print(f"[bold red]refresh failed:[/] {escape(str(error))} ({escape(str(target))} unchanged)")
        raise typer.Exit(EXIT_FAILED) from None
    out.print(f"wrote {outcome.ipv4} IPv4 and {outcome.ipv6} IPv6 ranges to {escape(str(outcome.path))}"
              f" ({len(outcome.added)} added, {len(outcome.removed)} removed)")
    for network in outcome.added:
        out.print(f"  + {network}")
    for network in outcome.removed:
        out.print(f"  - {network}")
    out.print("then: provision render, and nft -f OUT/nftables/wa-sip.nft to load them")


def register(app: typer.Typer) -> None:
    """Add `provision meta-ranges ...` to the `provision` app."""
    app.add_typer(meta_ranges_app, name="meta-ranges")
