"""``api``/``bgapi`` commands of the stand-in, ``originate`` above all.

Outputs follow FreeSWITCH's text: ``+OK <uuid>\\n`` / ``-ERR <CAUSE>\\n`` for originate,
``-ERR <cmd> Command not found!\\n`` for an unknown command, ``-USAGE: ...`` for bad syntax.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lab.esl_standin.channel import Channel
from lab.esl_standin.scenarios import MetaBehaviour, meta_bye, refuse_bic
from lab.esl_standin.switch import QueuedApp, Switch

if TYPE_CHECKING:
    from lab.esl_standin.listener import Listener

ORIGINATE_USAGE = (
    "-USAGE: <call url> <exten>|&<application_name>(<app_args>) [<dialplan>] [<context>] "
    "[<cid_name>] [<cid_num>] [<timeout_sec>]\n"
)


@dataclass
class OriginateRequest:
    variables: dict[str, str]
    endpoint: str
    app: str
    app_arg: str
    extension: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def user(self) -> str:
        return self.endpoint.rsplit("/", 1)[-1].split("@", 1)[0]


def split_variables(text: str) -> dict[str, str]:
    """``a=1,b=2`` with ``\\,`` escaping a comma inside a value."""
    result: dict[str, str] = {}
    current: list[str] = []
    items: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    for item in items:
        name, _, value = item.partition("=")
        if name:
            result[name.strip()] = value
    return result


def parse_originate(args: str) -> OriginateRequest | None:
    """``{vars}endpoint &app(arg)`` or ``{vars}endpoint extension [dialplan] [context]``."""
    text = args.strip()
    variables: dict[str, str] = {}
    if text.startswith("{"):
        end = text.find("}")
        if end < 0:
            return None
        variables = split_variables(text[1:end])
        text = text[end + 1 :]
    endpoint, _, rest = text.partition(" ")
    rest = rest.strip()
    if not endpoint or not rest:
        return None
    if rest.startswith("&"):
        app, _, arg = rest[1:].partition("(")
        return OriginateRequest(variables, endpoint, app, arg.rsplit(")", 1)[0])
    return OriginateRequest(variables, endpoint, "", "", extension=rest.split(" ", 1)[0])


class StandinApi:
    """The API command table; one instance per stand-in."""

    def __init__(self, switch: Switch, meta: MetaBehaviour) -> None:
        self.switch = switch
        self.meta = meta
        self.background: set[asyncio.Task[None]] = set()
        self.originated: list[OriginateRequest] = []

    async def __call__(self, name: str, args: str, listener: Listener) -> str:
        command = name.strip().lower()
        if command == "status":
            return f"UP 0 years, 0 days\n{len(self.switch.calls)} session(s)\n"
        if command == "echo":
            return args
        if command == "uuid_exists":
            return "true" if args.strip() in self.switch.calls else "false"
        if command == "uuid_getvar":
            call_uuid, _, var = args.strip().partition(" ")
            runtime = self.switch.calls.get(call_uuid)
            if runtime is None:
                return "-ERR No such channel!\n"
            return runtime.channel.variables.get(var, "_undef_")
        if command == "uuid_kill":
            return await self._uuid_kill(args)
        if command == "originate":
            return await self.originate(args)
        return f"-ERR {name} Command not found!\n"

    async def _uuid_kill(self, args: str) -> str:
        call_uuid, _, cause = args.strip().partition(" ")
        runtime = self.switch.calls.get(call_uuid)
        if runtime is None:
            return "-ERR No such channel!\n"
        self._spawn(
            self.switch.hangup(runtime, cause.strip() or "NORMAL_CLEARING", disposition="send_bye")
        )
        return "+OK\n"

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    async def originate(self, args: str) -> str:
        request = parse_originate(args)
        if request is None:
            return ORIGINATE_USAGE
        self.originated.append(request)
        variables = request.variables
        channel = Channel(
            name=f"{request.endpoint.rsplit('/', 1)[0]}/{request.user}",
            direction="outbound",
            caller_number=variables.get("origination_caller_id_number", "0000000000"),
            destination_number=request.user,
            variables=dict(variables),
        )
        if variables.get("origination_uuid"):
            channel.uuid = variables["origination_uuid"]
        channel.variables["uuid"] = channel.uuid
        runtime = self.switch.add_call(channel)
        self.switch.fire_channel(channel, "CHANNEL_OUTGOING")
        outcome = self.meta.outcome_for(request.user)
        if outcome.ring_s:
            await asyncio.sleep(outcome.ring_s)
        if request.endpoint.startswith("error/"):
            cause = request.endpoint.removeprefix("error/")
            await self.switch.hangup(runtime, cause, disposition="send_refuse")
            return f"-ERR {cause}\n"
        if outcome.status >= 300:
            return f"-ERR {await refuse_bic(self.switch, runtime, outcome)}\n"
        self.switch.answer(runtime)
        app = request.app or "park"
        runtime.apps.put_nowait(QueuedApp(app, request.app_arg, None, 0.0))
        self.switch.start_worker(runtime)
        if outcome.talk_s is not None:
            self._spawn(
                meta_bye(
                    self.switch,
                    runtime,
                    outcome.talk_s,
                    outcome.meta_duration,
                    self.meta.duration_header,
                )
            )
        return f"+OK {channel.uuid}\n"
