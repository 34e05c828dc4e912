"""``wa-esl``: run the controller, place a business-initiated call, list/export CDRs.

Thin over the modules that do the work (kamcli style): each command parses, calls, prints.
Bad input ends with a one-line message and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sqlite3
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from esl.bic import BicRequest, BicRequestError, BicResult, place_bic, refused_result
from esl.call_report import build_report, report_lines
from esl.cdr import CdrStore, is_whatsapp_call, record_from_hangup, srtp_text
from esl.cdr_export import to_csv, to_json
from esl.cdr_spool import CdrSpoolError
from esl.client import connect_inbound
from esl.controller import Controller
from esl.database import DatabaseRefused, DatabaseUnreachable
from esl.edge_log import EdgeLogError
from esl.errors import EslError
from esl.event import Event
from esl.gctune import tune_gc
from esl.preflight import Verdict, permission_token, permission_words
from esl.preflight_setup import preflight_for
from esl.prometheus import MetricsListenError, serve_registry
from esl.site import (
    WebhookSetup,
    WebhookSetupError,
    duration_tolerance,
    load_controller_settings,
    webhook_config,
)
from esl.webhook import WebhookReceiver, bound_port
from esl.webhook import serve as serve_webhook
from siteconfig.atomic_file import replace_file
from siteconfig.controller import ControllerSettings, SettingsError
from siteconfig.database_url import PostgresUrl, parse_location

app = typer.Typer(help="WhatsApp calls on FreeSWITCH: the ESL controller.", no_args_is_help=True)
cdr_app = typer.Typer(help="Call detail records.", no_args_is_help=True)
app.add_typer(cdr_app, name="cdr")
call_app = typer.Typer(help="One call, explained.", no_args_is_help=True)
app.add_typer(call_app, name="call")
console = Console()
errors = Console(stderr=True)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Site config (TOML), or a file with just the [esl] table.")
]


def _fail(label: str, message: object, code: int) -> typer.Exit:
    """Print ``label: message`` to stderr (message as plain text, not rich markup)."""
    errors.print(f"[red]{escape(label)}:[/red] {escape(str(message))}")
    return typer.Exit(code)


def _settings(path: Path) -> ControllerSettings:
    try:
        return load_controller_settings(path)
    except SettingsError as exc:
        raise _fail("settings", exc, 2) from exc


@app.command()
def run(config: ConfigOption, verbose: bool = False) -> None:
    """Run the controller until SIGTERM/SIGINT."""
    settings = _settings(config)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(_run(settings))


async def _run(settings: ControllerSettings) -> None:
    try:
        controller = Controller(settings)
    except CdrSpoolError as exc:
        raise _fail("esl.cdr_spool", exc, 1) from exc
    except DatabaseRefused as exc:  # it answered, and no: waiting would not help
        raise _fail("CDR database ([esl] cdr_db) refused", f"{exc} (a configuration that "
                    "cannot work as it is: put the URL or the server right and start wa-esl "
                    "again; an unreachable database would not stop it)", 1) from exc
    except (sqlite3.Error, OSError) as exc:
        raise _fail(f"CDR database {settings.cdr_db}", exc, 1) from exc
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    try:
        await controller.start()
    except MetricsListenError as exc:
        await controller.stop()
        raise _fail("esl.metrics_listen", exc, 1) from exc
    except OSError as exc:
        raise _fail(f"cannot listen on {settings.listen.host}:{settings.listen.port}", exc, 1) from exc
    tune_gc()
    await stop.wait()
    await controller.stop()
    controller.store.close()


@app.command()
def originate(
    config: ConfigOption,
    business_number: Annotated[str, typer.Option("--from", help="Business number, +E164.")],
    user: Annotated[str, typer.Option("--to", help="WhatsApp user, +E164 or user id.")],
    agent: Annotated[str | None, typer.Option(help="Dial string to bridge to.")] = None,
    timeout: Annotated[float | None, typer.Option(
        min=1, help="Seconds the call may ring before FreeSWITCH cancels it "
                    "(default: [esl.freeswitch] originate_timeout_s).")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Skip the call-permission pre-flight (Meta still refuses a call "
        "without a permission, after the INVITE).")] = False,
) -> None:
    """Place a business-initiated call; exit 0 if answered, 3 if refused (with diagnosis).

    Pre-flight first (unless --force): the user's call permission, Meta's start_call limits
    and the unanswered streak; a refusal there sends nothing and says when to retry.
    """
    settings = _settings(config)
    request = BicRequest(business_number, user, agent)
    try:
        result = asyncio.run(_originate(settings, request, timeout, force))
    except BicRequestError as exc:
        raise _fail("request", exc, 2) from exc
    except EslError as exc:
        raise _fail("FreeSWITCH", exc, 1) from exc
    except (sqlite3.Error, OSError) as exc:
        raise _fail(f"CDR database {settings.cdr_db}", exc, 1) from exc
    verdict = result.preflight
    if verdict is not None and not verdict.allowed:
        console.print(f"refused in pre-flight: {verdict.summary()} (call {result.call_uuid}; "
                      "--force skips the check)", markup=False)
        raise typer.Exit(3)
    if result.answered:
        console.print(f"answered: call {result.call_uuid}", markup=False)
        return
    status = f" (SIP {result.sip_status})" if result.sip_status else ""
    console.print(f"not answered: {result.hangup_cause}{status}: {result.diagnosis}", markup=False)
    raise typer.Exit(3)


async def _originate(settings: ControllerSettings, request: BicRequest,
                     timeout: float | None, force: bool = False) -> BicResult:
    request.validate()
    if settings.number(request.business_number) is None:
        raise BicRequestError(
            f"business number {request.business_number} is not configured in [esl.numbers]")
    if force:
        return await _place(settings, request, timeout, None)
    verdict = await _check(settings, request)
    if verdict is not None and not verdict.allowed:
        store = CdrStore(settings.cdr_db, node=settings.node, defer=True)
        try:
            return refused_result(request, verdict, store)
        finally:
            store.close()
    return await _place(settings, request, timeout, verdict)


async def _check(settings: ControllerSettings, request: BicRequest) -> Verdict | None:
    """Pre-flight for one request (None when it is off), its warnings printed at once."""
    request.validate()
    if settings.number(request.business_number) is None:
        raise BicRequestError(
            f"business number {request.business_number} is not configured in [esl.numbers]")
    # deferred: with the database unreachable pre-flight refuses (cdr_db_unreachable)
    store = CdrStore(settings.cdr_db, node=settings.node, defer=True)
    try:
        async with preflight_for(settings, store) as preflight:
            verdict = (await preflight.check(request.business_number, request.user)
                       if preflight is not None else None)
    finally:
        store.close()
    for warning in verdict.warnings if verdict is not None else ():
        errors.print(f"[yellow]pre-flight warning:[/yellow] {escape(warning)}")
    return verdict


@app.command("preflight")
def preflight_command(
    config: ConfigOption,
    business_number: Annotated[str, typer.Option("--from", help="Business number, +E164.")],
    user: Annotated[str, typer.Option("--to", help="WhatsApp user, +E164 or user id.")],
) -> None:
    """Would a business-initiated call pass pre-flight now? Nothing is placed, no CDR written.

    Exit 0: it may be placed (the permission it would go out under is printed); 3: refused,
    with the reason and when to retry. The same check `wa-esl originate` runs first (a dialer
    can ask before queueing a call; Graph is asked as originate would ask it).
    """
    settings = _settings(config)
    try:
        verdict = asyncio.run(_check(settings, BicRequest(business_number, user, None)))
    except BicRequestError as exc:
        raise _fail("request", exc, 2) from exc
    except (sqlite3.Error, OSError) as exc:
        raise _fail(f"CDR database {settings.cdr_db}", exc, 1) from exc
    if verdict is None:
        typer.echo("pre-flight is off ([esl.preflight] enabled = false): nothing checked")
        return
    if not verdict.allowed:  # one line each, never wrapped: dialers read it
        typer.echo(f"refused in pre-flight: {verdict.summary()}")
        raise typer.Exit(3)
    permission = (permission_words(permission_token(verdict.permission))
                  if verdict.permission is not None else "none recorded")
    typer.echo(f"pre-flight passed: {verdict.detail}; permission: {permission}")


async def _place(settings: ControllerSettings, request: BicRequest, timeout: float | None,
                 verdict: Verdict | None) -> BicResult:
    """Connect to FreeSWITCH and originate (pre-flight, if any, already passed)."""
    fs = settings.freeswitch
    connection = await connect_inbound(
        fs.host, fs.port, fs.password.get_secret_value(), timeout=fs.connect_timeout_s
    )
    try:
        await connection.command("event json CHANNEL_HANGUP_COMPLETE BACKGROUND_JOB")
        # deferred: a --force call goes out with the database unreachable; the controller's
        # inbound connection spools its CDR, and the result says why from the cause alone
        store = CdrStore(settings.cdr_db, node=settings.node, defer=True)
        try:

            def record(event: Event) -> None:
                if event.name == "CHANNEL_HANGUP_COMPLETE" and is_whatsapp_call(event):
                    try:
                        store.upsert(record_from_hangup(event))
                    except DatabaseUnreachable as exc:
                        errors.print(f"[yellow]CDR not written here:[/yellow] {escape(str(exc))}"
                                     " (wa-esl's own connection spools it)")

            connection.on_event(record)
            return await place_bic(connection, request, settings, store, timeout=timeout,
                                   checked=verdict)
        finally:
            store.close()
    finally:
        await connection.close()


def _store(config: Path | None, db: str | None, *, fail: bool = True) -> CdrStore:
    """The CDR store of ``--db`` or the config; a database that cannot be opened ends the
    command with its message (``fail=False``: DatabaseUnreachable is raised instead, for a
    command that can do without it)."""
    location: Path | PostgresUrl
    if db is not None:
        try:
            location = parse_location(db)
        except ValueError as exc:
            raise _fail("--db", exc, 2) from exc
    elif config is not None:
        location = _settings(config).cdr_db
    else:
        raise _fail("cdr", "give --db or --config", 2)
    if isinstance(location, Path) and not location.is_file():
        raise _fail("cdr", f"no CDR database at {location}", 2)
    try:
        return CdrStore(location)
    except DatabaseUnreachable as exc:
        if not fail and not isinstance(exc, DatabaseRefused):
            raise
        raise _fail("CDR database", exc, 2) from exc
    except (sqlite3.Error, OSError) as exc:  # a PostgreSQL fault names the URL (no password)
        label = "CDR database" if isinstance(location, PostgresUrl) else f"CDR database {location}"
        raise _fail(label, exc, 2) from exc


DbOption = Annotated[str | None, typer.Option(
    "--db", help="CDR database: SQLite file, or postgresql://USER@HOST[:PORT]/DATABASE "
    "(password from PGPASSWORD or ~/.pgpass rather than the command line).")]
OptionalConfig = Annotated[Path | None, typer.Option("--config", "-c")]


@cdr_app.command("list")
def cdr_list(
    config: OptionalConfig = None,
    db: DbOption = None,
    limit: Annotated[int, typer.Option(min=1)] = 50,
    direction: Annotated[Literal["uic", "bic"] | None, typer.Option(help="uic or bic")] = None,
    node: Annotated[str | None, typer.Option(help="Only this media node's calls.")] = None,
) -> None:
    """Show the most recent calls (of every media node sharing the database)."""
    store = _store(config, db)
    try:
        records = store.recent(limit=limit, direction=direction, node=node)
    except sqlite3.Error as exc:
        raise _fail("CDR database", exc, 2) from exc
    finally:
        store.close()
    table = Table("invite_at", "node", "dir", "wacid", "business", "user", "srtp", "cause",
                  "sip", "meta s", "fs s", "diagnosis")
    for r in records:
        cells = (
            r.invite_at or "", r.node or "", r.direction or "", r.wacid or "", r.business_number or "",
            r.user_number or "", srtp_text(r) if r.srtp_mode else "", r.hangup_cause or r.state,
            str(r.sip_status or ""), str(r.meta_duration_s or ""),
            f"{r.fs_duration_s:.1f}" if r.fs_duration_s is not None else "", r.diagnosis or "",
        )
        table.add_row(*(escape(cell) for cell in cells))  # "[esl.numbers]" is not markup
    Console().print(table)  # created here so the terminal width is read now


@cdr_app.command("export")
def cdr_export(
    config: OptionalConfig = None,
    db: DbOption = None,
    fmt: Annotated[Literal["csv", "json"], typer.Option("--format")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o")] = None,
    limit: Annotated[int, typer.Option(min=1)] = 1_000_000,
) -> None:
    """Export CDRs as CSV or JSON (stdout unless --output; the file is replaced atomically)."""
    store = _store(config, db)
    try:
        records = store.recent(limit=limit)
    except sqlite3.Error as exc:
        raise _fail("CDR database", exc, 2) from exc
    finally:
        store.close()
    text = to_csv(records) if fmt == "csv" else to_json(records)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        replace_file(output, text, 0o600)  # users' numbers: private, as before
    except OSError as exc:
        raise _fail(f"cannot write {output}", exc.strerror or exc, 1) from exc


@call_app.command("show")
def call_show(
    call: Annotated[str, typer.Argument(help="wacid, SIP Call-ID or FreeSWITCH UUID.")],
    config: OptionalConfig = None,
    db: DbOption = None,
    edge_log: Annotated[list[Path] | None, typer.Option(
        "--edge-log", help="Kamailio log with the edge's call lines (repeatable; default: "
        "[esl] edge_log).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Did the INVITE reach the edge, what was answered, did media flow: one call's story."""
    settings = _settings(config) if config is not None else None
    logs = tuple(edge_log or ([settings.edge_log] if settings and settings.edge_log else []))
    store = None
    if db is not None or config is not None:
        try:
            store = _store(config, db, fail=not logs)
        except DatabaseUnreachable as exc:  # the edge log alone still tells part of the story
            errors.print(f"[yellow]CDR database unreachable, the edge log alone:[/yellow] "
                         f"{escape(str(exc))}")
    try:
        report = build_report(call, store, logs,
                              duration_tolerance_s=duration_tolerance(config) if config else 6,
                              node_lost_after_s=settings.node_lost_after_s if settings else 15)
    except EdgeLogError as exc:
        raise _fail("edge log", exc, 2) from exc
    except sqlite3.Error as exc:
        raise _fail("CDR database", exc, 2) from exc
    finally:
        if store is not None:
            store.close()
    if not logs and store is None:
        raise _fail("call", "give --config, or --db and/or --edge-log", 2)
    if not report.found:
        where = [f"CDR {store.path}"] if store is not None else []
        where += [f"edge log {p}" for p in logs]
        raise _fail("call", f"no call {call!r} in " + ", ".join(where), 3)
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2, sort_keys=True))
        return
    for line in report_lines(report):
        typer.echo(line)


@app.command()
def webhook(
    config: Annotated[Path, typer.Option("--config", "-c", help="The site config (TOML) with "
                                         "[webhook] and [[numbers]].")],
    verbose: bool = False,
) -> None:
    """Receive Meta's webhook posts (permission replies, call events) until SIGTERM/SIGINT."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        setup = webhook_config(config)
    except WebhookSetupError as exc:
        raise _fail("webhook", exc, 2) from exc
    for warning in setup.warnings:
        errors.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    asyncio.run(_webhook(setup))


async def _webhook(setup: WebhookSetup) -> None:
    receiver = WebhookReceiver(setup.config)
    metrics = None
    if setup.metrics_listen is not None:
        try:
            metrics = serve_registry(receiver.metrics.registry, *setup.metrics_listen)
        except MetricsListenError as exc:
            raise _fail("webhook.metrics_listen", exc, 1) from exc
    host, port = setup.listen
    try:
        runner = await serve_webhook(receiver, host, port)
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}", exc, 1) from exc
    logging.getLogger("esl.webhook").info(
        "webhook receiver on http://%s:%s/ (CDR database %s)", host, bound_port(runner),
        setup.config.database)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    if metrics is not None:
        metrics.close()


STANDIN_MOVED = (
    "the Event Socket stand-in is a test party and lives in the lab now: "
    "run `python -m lab.esl_standin --port 8021` from a wa-sip checkout"
)


@app.command(hidden=True, context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def standin() -> None:
    """Moved: the stand-in is no part of the product (product packages never import lab/)."""
    raise _fail("wa-esl standin", STANDIN_MOVED, 2)


def main() -> None:
    """Console-script entry point (``wa-esl``)."""
    app()
