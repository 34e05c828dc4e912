"""`provision permission request|status --from NUMBER --to USER`: thin over permission.py."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from esl.permission_requests import PermissionRequestLog
from esl.preflight import iso, user_wa_id
from graphapi.errors import GraphError
from graphapi.permissions import REQUEST_TEXT_LIMIT, PermissionAnswer, user_query
from provisioning.commands import (
    EXIT_ATTENTION,
    EXIT_FAILED,
    ConfigOption,
    JsonOption,
    TokenFileOption,
    _Context,
    _run,
    err,
    out,
)
from provisioning.permission import DEFAULT_TEXT, RequestOutcome, request_permission, status_of

permission_app = typer.Typer(help="Users' call permissions (business-initiated calls need one).",
                             no_args_is_help=True)
FromOption = Annotated[str, typer.Option("--from", help="Business number, +E164 (in [[numbers]]).")]
ToOption = Annotated[str, typer.Option("--to", help="WhatsApp user: +E164 or a user id.")]


def _target(ctx: _Context, business_number: str, user: str) -> str:
    """The number's phone_number_id; bad input is a one-line error (exit 2)."""
    try:
        user_query(user)
    except ValueError as error:
        ctx.fail_config(str(error))
    number = ctx.numbers[0] if ctx.numbers else None
    if number is None:
        ctx.fail_config(f"{business_number} is not in the site config's [[numbers]]")
    assert number is not None
    return number.phone_number_id


@permission_app.command("status")
def status(config: ConfigOption, business_number: FromOption, user: ToOption,
           token_file: TokenFileOption = None, as_json: JsonOption = False) -> None:
    """The user's permission and every limit Meta reports (start_call, requests)."""
    ctx = _Context(config, [business_number], token_file, as_json)
    phone_number_id = _target(ctx, business_number, user)

    async def work() -> PermissionAnswer:
        async with ctx.client() as client:
            return await client.call_permissions(phone_number_id, user)

    try:
        answer = _run(work)
    except GraphError as error:
        err.print(f"[bold red]call_permissions:[/] {ctx.plain(error.explain())}")
        raise typer.Exit(EXIT_FAILED) from None
    result = status_of(answer)
    if as_json:
        ctx.emit_json({"command": "permission status", "business_number": business_number,
                       "user": user, "status": result.status, "expires": result.expires,
                       "limits": [row.__dict__ for row in result.rows]})
        return
    out.print(f"permission: {escape(result.status)} (expires: {escape(result.expires)})")
    table = Table("action", "can", "period", "used", "resets", title="limits (from Graph)")
    for row in result.rows:
        table.add_row(*(escape(cell) for cell in (row.action, row.can, row.period, row.used,
                                                  row.resets)))
    out.print(table)


@permission_app.command("request")
def request(config: ConfigOption, business_number: FromOption, user: ToOption,
            text: Annotated[str, typer.Option(help="The message the user sees.")] = DEFAULT_TEXT,
            token_file: TokenFileOption = None, as_json: JsonOption = False) -> None:
    """Send the call permission request, unless Meta's request limits say not now."""
    ctx = _Context(config, [business_number], token_file, as_json)
    phone_number_id = _target(ctx, business_number, user)
    if not text.strip() or len(text) > REQUEST_TEXT_LIMIT:
        ctx.fail_config(f"--text must be 1 to {REQUEST_TEXT_LIMIT} characters")

    async def work() -> RequestOutcome:
        async with ctx.client() as client:
            return await request_permission(client, phone_number_id, user, text)

    try:
        outcome = _run(work)
    except GraphError as error:
        err.print(f"[bold red]permission request:[/] {ctx.plain(error.explain())}")
        raise typer.Exit(EXIT_FAILED) from None
    notes = list(outcome.notes)
    if outcome.sent and outcome.message_id:
        notes += _record_sent(ctx, outcome.message_id, business_number, user)
    retry = f"; retry after {iso(outcome.retry_at)}" if outcome.retry_at else ""
    if as_json:
        ctx.emit_json({"command": "permission request", "sent": outcome.sent,
                       "reason": outcome.reason, "detail": outcome.detail,
                       "message_id": outcome.message_id, "retry_at": outcome.retry_at,
                       "notes": notes})
    else:
        for note in notes:
            err.print(f"[yellow]note:[/] {ctx.plain(note)}")
        prefix = "sent" if outcome.sent else f"not sent ({outcome.reason})"
        out.print(f"{prefix}: {ctx.plain(outcome.detail)}{retry}")
    if not outcome.sent:
        raise typer.Exit(EXIT_ATTENTION)


def _record_sent(ctx: _Context, message_id: str, business_number: str, user: str) -> list[str]:
    """Record the sent request in the CDR database for wa-esl's metrics; a note if it cannot.

    Only where the database's folder exists (wa-esl's host): a provisioning host without one
    gets a note, never a folder made for a database nobody reads.
    """
    database = ctx.cfg.esl.cdr_db  # a SQLite file, or the site's PostgreSQL database
    if isinstance(database, Path) and not database.parent.is_dir():
        return [f"not counted in wa-esl's permission request metric: no folder {database.parent} "
                "for the CDR database ([esl] cdr_db) on this host"]
    try:
        log = PermissionRequestLog(database)
        try:
            log.record(message_id, business_number, user_wa_id(user), int(time.time()))
        finally:
            log.close()
    except (sqlite3.Error, OSError) as error:
        return [f"not counted in wa-esl's permission request metric: CDR database {database}: "
                f"{error}"]
    return []


def register(app: typer.Typer) -> None:
    app.add_typer(permission_app, name="permission")

