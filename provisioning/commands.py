"""The Graph-facing `provision` subcommands: apply, sync, rotate-password, status, doctor.

Thin, as in kamcli: each command loads the config and the token, runs the work in the module
named after it, and prints (rich tables for people, `--json` for machines). Exit codes:
0 done and all well; 1 something failed (a number, the store, the Kamailio reload, a doctor
check); 2 nothing was done (config, token or usage error); 3 done, but attention is needed
(status found drift or a stale store; sync found numbers with SIP disabled or without this
app's server; rotate-password could not set SRTP back); 130 interrupted.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from graphapi.client import GraphClient, client_from_config, resolve_app_id
from graphapi.errors import GraphError
from provisioning import kamailio_rpc
from provisioning.apply import apply_number
from provisioning.cluster_doctor import cluster_findings
from provisioning.credential_store import StoreError
from provisioning.doctor import (
    Finding,
    Level,
    admission_findings,
    direct_path_findings,
    graph_auth_finding,
    kamailio_findings,
    media_findings,
    number_findings,
    rtpengine_interface_findings,
    tls_findings,
    worst,
)
from provisioning.freeswitch_binary import freeswitch_binary, freeswitch_missing
from provisioning.graph_token import TokenError, load_token, redact
from provisioning.in_dialog_keys import key_findings
from provisioning.kamailio_features import installed_features, installed_kamailio
from provisioning.rotate import WINDOW_ACCOUNT, RotationError, rotate_password
from provisioning.status import number_status
from provisioning.store_backend import CredentialBackend, open_credentials, store_location
from provisioning.sync import SyncOptions, SyncOutcome, summary, sync_numbers
from provisioning.tls_probe import probe_tls
from siteconfig.model import ConfigError, Number, SiteConfig, load_config, split_host_port

EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_ATTENTION, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
PROGRESS_MIN_NUMBERS = 20

err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
T = TypeVar("T")

ConfigOption = Annotated[Path, typer.Option("--config", "-c", help="Site config (TOML).")]
NumberOption = Annotated[list[str] | None, typer.Option(
    "--number", "-n", help="Only this +E164 business number (repeatable); default: all in [[numbers]].")]
TokenFileOption = Annotated[Path | None, typer.Option(
    "--token-file", help="File holding the Graph access token (default: graph.token_file, then "
    "the graph.token_env variable). The token is never accepted as an argument.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output on stdout.")]
RpcOption = Annotated[list[Path] | None, typer.Option(
    "--rpc-socket", help="Kamailio jsonrpcs socket to reload after writing (repeat for each node).")]


class _Context:
    """What every Graph command needs: config, token, numbers, and how to report."""

    def __init__(self, config: Path, numbers: list[str] | None, token_file: Path | None,
                 as_json: bool) -> None:
        self.as_json = as_json
        try:
            self.cfg: SiteConfig = load_config(config)
        except ConfigError as error:
            self.fail_config(f"config error in {error.path}:", error.problems)
        try:
            self.token, warnings = load_token(self.cfg.graph.token_env,
                                              token_file or self.cfg.graph.token_file)
        except TokenError as error:
            self.fail_config(str(error))
        for warning in warnings:
            err.print(f"[yellow]warning:[/] {escape(warning)}")
        self.numbers = self._select(numbers)

    def _select(self, wanted: list[str] | None) -> list[Number]:
        if not wanted:
            return list(self.cfg.numbers)
        known = {n.business_number: n for n in self.cfg.numbers}
        unknown = [w for w in wanted if w not in known]
        if unknown:
            self.fail_config(f"not in the site config's [[numbers]]: {', '.join(unknown)}")
        return [known[w] for w in wanted]

    def fail_config(self, message: str, details: list[str] | None = None) -> None:
        err.print(f"[bold red]{escape(message)}[/]")
        for line in details or []:
            err.print(f"  - {escape(line)}")
        raise typer.Exit(EXIT_CONFIG)

    def client(self) -> GraphClient:
        return client_from_config(self.cfg.graph, self.token)

    def open_store(self) -> CredentialBackend:
        os.umask(0o077)  # the store and its WAL/SHM files: owner only
        try:
            return open_credentials(self.cfg.credentials)
        except StoreError as error:
            err.print(f"[bold red]credential store:[/] {self.plain(str(error))}")
            raise typer.Exit(EXIT_FAILED) from None

    def clean(self, text: str) -> str:
        return redact(text, [self.token])

    def plain(self, text: str) -> str:
        """`text` from outside (Graph, the store, Kamailio), cleaned and safe to print as markup."""
        return escape(self.clean(text))

    def emit_json(self, document: dict[str, Any]) -> None:
        sys.stdout.write(self.clean(json.dumps(document, indent=2, sort_keys=True)) + "\n")


def _run(work: Callable[[], Awaitable[T]]) -> T:
    """asyncio.run, with Ctrl-C turned into exit code 130 after `work`'s own clean-up ran."""
    try:
        return asyncio.run(work())  # type: ignore[arg-type]
    except KeyboardInterrupt:
        err.print("[bold yellow]interrupted[/]: every number in the store holds a complete credential "
                  "(old or new); run the command again to finish")
        raise typer.Exit(EXIT_INTERRUPTED) from None


async def _app_id(ctx: _Context, client: GraphClient) -> str:
    try:
        return await resolve_app_id(client, ctx.cfg.graph)
    except GraphError as error:
        err.print(f"[bold red]cannot tell which app the token belongs to:[/] {ctx.plain(error.explain())}")
        raise typer.Exit(EXIT_FAILED) from None


@contextmanager
def _progress(enabled: bool, total: int, label: str) -> Iterator[Callable[[], None]]:
    if not enabled:
        yield lambda: None
        return
    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task(label, total=total)
        yield lambda: progress.advance(task)


def _reload(ctx: _Context, sockets: list[Path]) -> list[dict[str, str]]:
    outcomes = []
    for path in sockets:
        try:
            kamailio_rpc.reload_credentials(path)
            outcomes.append({"rpc_socket": str(path), "outcome": "reloaded"})
        except kamailio_rpc.RpcError as error:
            outcomes.append({"rpc_socket": str(path), "outcome": "error", "detail": ctx.clean(str(error))})
    return outcomes


def _print_reload(reloads: list[dict[str, str]]) -> None:
    for entry in reloads:
        if entry["outcome"] == "reloaded":
            out.print(f"Kamailio at {escape(entry['rpc_socket'])}: wa_creds reloaded")
        else:
            err.print(f"[bold red]Kamailio reload failed[/] at {escape(entry['rpc_socket'])}: "
                      f"{escape(entry['detail'])} "
                      "(the store is written; run `kamcmd htable.reload wa_creds`)")


# ---- sync -------------------------------------------------------------------------------------


def sync(
    config: ConfigOption,
    number: NumberOption = None,
    rpc_socket: RpcOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", help="Progress bar (default: on a terminal, 20+ numbers).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10000, help="Numbers per store transaction.")] = 500,
) -> None:
    """Fetch each number's SIP password from Graph into the credential store; reload Kamailio."""
    ctx = _Context(config, number, token_file, as_json)
    store = ctx.open_store()
    sockets = rpc_socket or []
    show_bar = progress if progress is not None else (
        not as_json and err.is_terminal and len(ctx.numbers) >= PROGRESS_MIN_NUMBERS)

    async def work() -> tuple[list[Any], dict[str, int]]:
        async with ctx.client() as client:
            app_id = await _app_id(ctx, client)
            with _progress(show_bar, len(ctx.numbers), "sync") as advance:
                try:
                    options = SyncOptions(batch_size=batch_size, workers=2 * ctx.cfg.graph.concurrency)
                    results = await sync_numbers(client, store, ctx.cfg.site.sip_domain, app_id,
                                                 ctx.numbers, options, on_progress=advance)
                except asyncio.CancelledError:
                    _print_reload(_reload(ctx, sockets))  # what was written before Ctrl-C goes live
                    raise
            return results, {"requests": client.stats.requests, "retries": client.stats.retries,
                             "rate_limited": client.stats.rate_limited}

    try:
        results, stats = _run(work)
    finally:
        store.close()
    counts = summary(results)
    reloads = _reload(ctx, sockets) if counts[SyncOutcome.UPDATED.value] else []
    if as_json:
        ctx.emit_json({"command": "sync", "store": store_location(ctx.cfg.credentials),
                       "results": [r.as_dict() for r in results], "summary": counts,
                       "reload": reloads, "graph": stats})
    else:
        table = Table("number", "outcome", "detail", title="provision sync")
        for result in results:
            style = {"error": "red", "updated": "green", "unchanged": ""}.get(result.outcome.value, "yellow")
            table.add_row(result.business_number, f"[{style}]{result.outcome.value}[/]" if style else
                          result.outcome.value, ctx.plain(result.detail))
        out.print(table)
        out.print(", ".join(f"{k}: {v}" for k, v in counts.items() if v) +
                  f" (Graph requests {stats['requests']}, retries {stats['retries']})")
        if not sockets and counts[SyncOutcome.UPDATED.value]:
            out.print("no --rpc-socket given: reload Kamailio with `kamcmd htable.reload wa_creds`")
        _print_reload(reloads)
    if counts[SyncOutcome.ERROR.value] or any(r["outcome"] == "error" for r in reloads):
        raise typer.Exit(EXIT_FAILED)
    if counts[SyncOutcome.SIP_DISABLED.value] or counts[SyncOutcome.NO_SERVER.value]:
        raise typer.Exit(EXIT_ATTENTION)


# ---- apply ------------------------------------------------------------------------------------


def apply(
    config: ConfigOption,
    number: NumberOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the diff; change nothing.")] = False,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Make Meta's calling settings (SIP status, this app's server, SRTP) match the site config."""
    ctx = _Context(config, number, token_file, as_json)

    async def work() -> list[Any]:
        async with ctx.client() as client:
            app_id = await _app_id(ctx, client)
            return list(await asyncio.gather(*(apply_number(client, ctx.cfg, app_id, n, dry_run)
                                               for n in ctx.numbers)))

    results = _run(work)
    if as_json:
        ctx.emit_json({"command": "apply", "dry_run": dry_run, "results": [r.as_dict() for r in results]})
    else:
        for result in results:
            colour = {"error": "red", "changed": "green", "would_change": "yellow"}.get(result.outcome, "")
            out.print(f"[bold]{result.business_number}[/] ({result.phone_number_id}): "
                      + (f"[{colour}]{result.outcome}[/]" if colour else result.outcome))
            for change in result.changes:
                out.print(f"  {change.field}: [red]- {escape(change.meta)}[/]  "
                          f"[green]+ {escape(change.wanted)}[/]")
            for warning in result.warnings:
                err.print(f"  [yellow]warning:[/] {escape(warning)}")
            if result.outcome == "error":
                err.print(f"  [red]{ctx.plain(result.detail)}[/]")
        if dry_run:
            out.print("dry run: nothing was sent to Meta")
    if any(r.outcome == "error" for r in results):
        raise typer.Exit(EXIT_FAILED)


# ---- rotate-password --------------------------------------------------------------------------


def rotate_password_command(
    business_number: Annotated[str, typer.Argument(help="The +E164 business number to rotate.")],
    config: ConfigOption,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    show_secrets: Annotated[bool, typer.Option("--show-secrets", help="Print the new password.")] = False,
    rpc_socket: RpcOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Reset a number's SIP password on Meta (disable + clear, re-enable, fetch), then sync it."""
    ctx = _Context(config, [business_number], token_file, as_json)
    target = ctx.numbers[0]
    if not as_json:
        out.print(WINDOW_ACCOUNT)
    if not yes:
        if not sys.stdin.isatty():
            ctx.fail_config("refusing to rotate without confirmation: pass --yes")
        typer.confirm(f"Rotate the SIP password of {business_number} now?", abort=True)
    store = ctx.open_store()

    async def work() -> Any:
        async with ctx.client() as client:
            app_id = await _app_id(ctx, client)
            return await rotate_password(client, store, ctx.cfg.site.sip_domain, app_id, target)

    try:
        result = _run(work)
    except RotationError as error:
        err.print(f"[bold red]rotation stopped ({error.stage}):[/] {ctx.plain(str(error))}")
        raise typer.Exit(EXIT_FAILED) from None
    finally:
        store.close()
    reloads = _reload(ctx, rpc_socket or [])
    if as_json:
        ctx.emit_json({"command": "rotate-password", **result.as_dict(show_secrets), "reload": reloads})
    else:
        for step in result.steps:
            out.print(f"  {escape(step)}")
        if show_secrets:
            out.print(f"new SIP password: {escape(result.new_password or '')}")
        if not rpc_socket:
            out.print("no --rpc-socket given: reload Kamailio now with `kamcmd htable.reload wa_creds`")
        _print_reload(reloads)
    if any(r["outcome"] == "error" for r in reloads):
        raise typer.Exit(EXIT_FAILED)
    if result.problem:
        raise typer.Exit(EXIT_ATTENTION)


# ---- status -----------------------------------------------------------------------------------


def status(
    config: ConfigOption,
    number: NumberOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per number: Meta's settings versus the site config and the store (no secrets shown)."""
    ctx = _Context(config, number, token_file, as_json)
    store = ctx.open_store()

    async def work() -> list[Any]:
        async with ctx.client() as client:
            app_id = await _app_id(ctx, client)
            return list(await asyncio.gather(*(number_status(client, ctx.cfg, store, app_id, n)
                                               for n in ctx.numbers)))

    try:
        results = _run(work)
    finally:
        store.close()
    if as_json:
        ctx.emit_json({"command": "status", "results": [r.as_dict() for r in results]})
    else:
        table = Table("number", "SIP", "server", "srtp", "codecs", "store", "drift",
                      title="provision status")
        for result in results:
            server = f"{result.server['hostname']}:{result.server['port']}" if result.server else "-"
            drift = ctx.plain(result.error) if result.error else escape(
                "; ".join(f"{d.field}: {d.meta} -> {d.wanted}" for d in result.drift) or "none")
            table.add_row(result.business_number, result.sip_status, server, result.srtp or "(default)",
                          result.codecs, result.store, drift)
        out.print(table)
    if any(r.error for r in results):
        raise typer.Exit(EXIT_FAILED)
    if not all(r.in_sync for r in results):
        raise typer.Exit(EXIT_ATTENTION)


# ---- doctor -----------------------------------------------------------------------------------


def doctor(
    config: ConfigOption,
    number: NumberOption = None,
    connect: Annotated[str | None, typer.Option(
        help="Connect here (HOST:PORT) instead of site.sip_domain:graph.server_port; the name "
        "checked is still site.sip_domain.")] = None,
    ca_file: Annotated[Path | None, typer.Option(
        help="CA bundle for the chain check (default: system).")] = None,
    expiry_days: Annotated[int, typer.Option(min=1, help="Warn when the certificate expires sooner.")] = 21,
    skip_graph: Annotated[bool, typer.Option("--skip-graph", help="Only the TLS/TCP checks.")] = False,
    skip_admission: Annotated[bool, typer.Option(
        "--skip-admission", help="Not on the edge host: skip the checks of the nftables admission "
        "rules (table inet wa_sip) and of the installed Kamailio.")] = False,
    rpc_socket: RpcOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check what Meta's FAQ asks a human to check; each finding: pass / warn / fail, cause, fix."""
    try:
        cfg = load_config(config)
    except ConfigError as error:
        err.print(f"[bold red]config error in {escape(str(error.path))}:[/]")
        for problem in error.problems:
            err.print(f"  - {escape(problem)}")
        raise typer.Exit(EXIT_CONFIG) from None
    try:
        host, port = (split_host_port(connect, 5061) if connect
                      else (cfg.site.sip_domain, cfg.graph.server_port))
    except ValueError as error:
        err.print(f"[bold red]--connect:[/] {escape(str(error))}")
        raise typer.Exit(EXIT_CONFIG) from None
    findings: list[Finding] = tls_findings(probe_tls(host, port, cfg.site.sip_domain, ca_file), expiry_days)
    if not skip_admission:
        findings += admission_findings(cfg)  # the nftables rules in front of the TLS port
        findings += kamailio_findings(cfg, installed_features(), installed_kamailio())
        findings += media_findings(cfg)
        findings += key_findings(cfg.edge.in_dialog_key_file, cfg.edge.in_dialog_key_max_age_days)
        findings += rtpengine_interface_findings(cfg)
    # DTLS numbers on the direct path: the FreeSWITCH of this host must carry patch 0001.
    findings += direct_path_findings(cfg, None if freeswitch_missing() else freeswitch_binary())
    # [cluster]: this edge's dmq reaches the other edges (lockouts and nonces are shared)
    findings += cluster_findings(cfg, rpc_socket or [])
    if not skip_graph:
        findings += _graph_doctor(config, number, token_file, as_json, rpc_socket or [])
    if as_json:
        sys.stdout.write(json.dumps({"command": "doctor", "result": worst(findings).value,
                                     "findings": [f.as_dict() for f in findings]}, indent=2) + "\n")
    else:
        colours = {Level.PASS: "green", Level.WARN: "yellow", Level.FAIL: "red"}
        for finding in findings:
            out.print(f"[{colours[finding.level]}]{finding.level.value:4}[/] {finding.check:24} "
                      f"{escape(finding.subject)}: {escape(finding.cause)}")
            if finding.fix and finding.level is not Level.PASS:
                out.print(f"     fix: {escape(finding.fix)}")
    if worst(findings) is Level.FAIL:
        raise typer.Exit(EXIT_FAILED)


def _graph_doctor(config: Path, number: list[str] | None, token_file: Path | None, as_json: bool,
                  rpc_sockets: list[Path]) -> list[Finding]:
    try:
        ctx = _Context(config, number, token_file, as_json)
    except typer.Exit:
        return [Finding("graph.token", Level.FAIL, "graph", "no usable Graph access token (see above)",
                        "set the token variable or graph.token_file")]
    store = ctx.open_store()

    async def work() -> list[Finding]:
        async with ctx.client() as client:
            try:
                app_id = await resolve_app_id(client, ctx.cfg.graph)
            except GraphError as error:
                return [graph_auth_finding("graph", error)]
            per_number = await asyncio.gather(*(
                number_findings(client, ctx.cfg, app_id, n, store, rpc_sockets) for n in ctx.numbers))
            return [f for found in per_number for f in found]

    try:
        findings = _run(work)
    finally:
        store.close()
    return [Finding(f.check, f.level, f.subject, ctx.clean(f.cause), f.fix) for f in findings]


def register(app: typer.Typer) -> None:
    """Add these commands to the `provision` app (cli.py keeps `render`)."""
    app.command()(apply)
    app.command()(sync)
    app.command("rotate-password")(rotate_password_command)
    app.command()(status)
    app.command()(doctor)
