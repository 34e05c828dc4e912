"""`make lab`'s call-permission section (issue 19): a business-initiated call Meta would refuse
is refused first in pre-flight, the permission is asked for, Meta's signed reply is received,
and the same call then passes pre-flight (and, with FreeSWITCH, is placed and answered).

Real processes, as users run them: `wa-esl originate`, `provision permission request`, `wa-esl
webhook` (a receiver on loopback checking `X-Hub-Signature-256` with the app secret read from
a 0600 file) and `wa-esl preflight`, all from one site config. Meta is played by the Graph
stand-in (lab/graph_standin, in this process): `call_permissions` with its limits and the 100
requests/s rate limit (613 past it), the request message, and the user's answer posted to the
receiver as Meta posts it, signed. Placing the call needs FreeSWITCH: where there is none, that
step is skipped with its reason, as the lab's other FreeSWITCH calls are.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esl.call_permissions import CallPermissionStore
from esl.permission_requests import permission_counts
from esl.preflight import iso, user_wa_id
from lab.bundle import wa_esl_command
from lab.graph_standin import GraphStandin
from lab.graph_standin.faults import RateLimiter
from lab.graph_standin.webhook_post import call_permission_reply, signed_post
from lab.meta_standin import WHATSAPP_USER
from lab.processes import LabError, LabParty, ManagedProcess, free_port

APP_ID = "700000000000001"
GRAPH_TOKEN = "lab-graph-token-not-a-secret"
APP_SECRET = "lab-app-secret-not-a-secret"
VERIFY_TOKEN = "lab-verify-token"
GRAPH_RATE = 100.0
"""Meta's limit on call_permissions, requests/s per app; the stand-in answers 613 past it."""
COMMAND_TIMEOUT_S = 60.0
PERMISSION_USER = WHATSAPP_USER
"""The WhatsApp user the section calls: the one the Meta stand-in answers as."""


@dataclass
class PermissionStep:
    name: str
    passed: bool
    notes: list[str] = field(default_factory=list)
    detail: str = ""


@dataclass(frozen=True)
class Ran:
    """One command as a user types it: its exit code and what it printed."""

    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str

    def text(self) -> str:
        return " ".join((self.stdout + " " + self.stderr).split())


def provision_command() -> list[str]:
    """The installed `provision` console script beside this interpreter (the venv's)."""
    script = Path(sys.executable).with_name("provision")
    if not script.exists():
        raise LabError(f"{script} is missing: run 'make python-deps' (pip install -e .)")
    return [str(script)]


def run_command(argv: list[str]) -> Ran:
    env = {key: value for key, value in os.environ.items()
           if key not in ("WA_GRAPH_TOKEN", "WA_APP_SECRET", "WA_WEBHOOK_VERIFY_TOKEN")}
    env["COLUMNS"] = "200"  # rich's tables and lines unwrapped in the lab's output
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S,
                              check=False, env=env)
    except subprocess.TimeoutExpired:
        raise LabError(f"{' '.join(argv[:2])} did not finish within {COMMAND_TIMEOUT_S:.0f} s") \
            from None
    return Ran(argv, done.returncode, done.stdout.strip(), done.stderr.strip())


def _secret_file(path: Path, value: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


class PermissionLab(LabParty):
    """The Graph stand-in and, once the site config is written, the webhook receiver."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.standin = GraphStandin({GRAPH_TOKEN: APP_ID},
                                    rate_limiter=RateLimiter(GRAPH_RATE, int(GRAPH_RATE),
                                                             code=613, status=400))
        self.webhook_port = free_port()
        self.receiver: ManagedProcess | None = None
        self.token_file = _secret_file(folder / "secrets" / "graph-token", GRAPH_TOKEN)
        self.secret_file = _secret_file(folder / "secrets" / "app-secret", APP_SECRET)
        self.verify_file = _secret_file(folder / "secrets" / "verify-token", VERIFY_TOKEN)

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.webhook_port}/"

    def overrides(self) -> dict[str, Any]:
        """The site config's [graph] and [webhook] for this lab."""
        return {
            "graph": {"base_url": self.standin.base_url, "app_id": APP_ID,
                      "token_file": str(self.token_file), "timeout_s": 5.0},
            "webhook": {"listen": f"127.0.0.1:{self.webhook_port}",
                        "app_secret_file": str(self.secret_file),
                        "verify_token_file": str(self.verify_file)},
        }

    def start(self) -> None:
        self.standin.start()

    def serve(self, numbers: dict[str, str]) -> None:
        """Meta knows these numbers (phone_number_id -> business number) and posts the users'
        replies to the receiver, signed with the app secret."""
        for phone_number_id in numbers:
            self.standin.state.add_number(phone_number_id)
        self.standin.post_webhooks_to(self.webhook_url, APP_SECRET, numbers)

    def start_receiver(self, config_file: Path) -> None:
        """`wa-esl webhook --config FILE`, until it says it listens."""
        self.receiver = ManagedProcess("wa-esl webhook",
                                       [*wa_esl_command(), "webhook", "--config", str(config_file)],
                                       self.folder / "wa-esl-webhook.log")
        self.receiver.start()
        _wait_for_log(self.receiver, r"webhook receiver on http://127\.0\.0\.1:\d+/", 20.0)

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
        self.standin.stop()


def _wait_for_log(process: ManagedProcess, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    compiled = re.compile(pattern)
    while True:
        try:
            text = process.log.read_text(errors="replace")
        except OSError:
            text = ""
        found = compiled.search(text)
        if found:
            return found[0]
        if not process.running():
            raise LabError(f"{process.name} exited; see {process.log}:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            raise LabError(f"{process.name} logged no line matching {pattern!r} within "
                           f"{timeout:.0f} s; see {process.log}")
        time.sleep(0.05)


SITE_TEMPLATE = """\
[site]
sip_domain = "sip.example.com"

[tls]
certificate = "fullchain.pem"
private_key = "privkey.pem"

[freeswitch]
[[freeswitch.sets]]
id = 1
nodes = [{{ uri = "sip:127.0.0.1:5080" }}]

[graph]
base_url = "{base_url}"
app_id = "{app_id}"
token_file = "{token_file}"
timeout_s = 5.0

[webhook]
listen = "127.0.0.1:{webhook_port}"
app_secret_file = "{secret_file}"
verify_token_file = "{verify_file}"

[esl]
cdr_db = "{cdr_db}"

[esl.freeswitch]
port = {esl_port}

[[numbers]]
business_number = "{business_number}"
phone_number_id = "{phone_number_id}"
"""


def write_site(lab: PermissionLab, folder: Path, business_number: str,
               phone_number_id: str) -> Path:
    """A site config of its own (no FreeSWITCH: nothing listens on its Event Socket port)."""
    path = folder / "site.toml"
    path.write_text(SITE_TEMPLATE.format(
        base_url=lab.standin.base_url, app_id=APP_ID, token_file=lab.token_file,
        webhook_port=lab.webhook_port, secret_file=lab.secret_file, verify_file=lab.verify_file,
        cdr_db=folder / "cdr.sqlite3", esl_port=free_port(), business_number=business_number,
        phone_number_id=phone_number_id), encoding="utf-8")
    return path


# ---- the steps ---------------------------------------------------------------------------------


def refused_first(lab: PermissionLab, config: Path, number: str, user: str) -> PermissionStep:
    """`wa-esl originate` without a permission: refused before any SIP leaves (exit 3)."""
    asked_before = lab.standin.stats.by_route.get("GET call_permissions", 0)
    ran = run_command([*wa_esl_command(), "originate", "--config", str(config), "--from",
                       number, "--to", user])
    asked = lab.standin.stats.by_route.get("GET call_permissions", 0) - asked_before
    reason = re.search(r"refused in pre-flight: ([a-z_]+):", ran.stdout)
    call = re.search(r"\(call ([0-9a-f-]{36});", ran.stdout)
    notes = [f"wa-esl originate (exit {ran.exit_code}): {' '.join(ran.stdout.split())}",
             f"Graph stand-in asked call_permissions {asked} time(s)"]
    passed = ran.exit_code == 3 and reason is not None and reason[1] == "no_permission" \
        and asked >= 1
    if call is not None:
        show = run_command([*wa_esl_command(), "call", "show", call[1], "--config", str(config)])
        diagnosis = next((line.strip() for line in show.stdout.splitlines()
                          if "diagnosis:" in line), "")
        notes.append(f"wa-esl call show {call[1]}: {diagnosis or show.text()}")
        passed = passed and "pre-flight refused, no_permission" in diagnosis
    return PermissionStep(f"business-initiated call from {number} to {user} without a call "
                          "permission: refused in pre-flight, nothing sent to FreeSWITCH or Meta",
                          passed, notes, "" if passed else "expected exit 3, reason "
                          "no_permission after a Graph lookup, and a PREFLIGHT_REFUSED CDR")


def request_sent(lab: PermissionLab, config: Path, number: str, user: str,
                 database: Path) -> PermissionStep:
    """`provision permission request`: the message reaches Graph once, counted for /metrics."""
    before = permission_counts(database)[0] if database.exists() else 0
    ran = run_command([*provision_command(), "permission", "request", "--config", str(config),
                       "--from", number, "--to", user])
    sent = [m for m in lab.standin.permissions.sent_messages if m["to"] == user_wa_id(user)]
    counted = permission_counts(database)[0] - before if database.exists() else 0
    passed = (ran.exit_code == 0 and ran.stdout.startswith("sent: call permission request sent")
              and len(sent) == 1 and counted == 1)
    notes = [f"provision permission request (exit {ran.exit_code}): {ran.text()}",
             f"the Graph stand-in received {len(sent)} call_permission_request message(s); "
             f"recorded for wa-esl's wasip_esl_permission_requests_sent_total: {counted}"]
    return PermissionStep("permission request sent by `provision permission request` (Meta's "
                          "request limits read first)", passed, notes,
                          "" if passed else "expected exit 0, one message at Graph, one recorded")


def reply_received(lab: PermissionLab, number: str, user: str, phone_number_id: str,
                   database: Path) -> PermissionStep:
    """Meta's signed call_permission_reply reaches the running receiver and is stored; a forged
    copy is refused 403 and Meta's retry of the real one is stored once."""
    lab.standin.wait_for_webhooks()
    posts = list(lab.standin.webhook_posts)
    wa_id = user_wa_id(user)
    store = CallPermissionStore(database)
    try:
        stored = store.current(number, wa_id)
    finally:
        store.close()
    notes = [f"the stand-in posted {len(posts)} signed call_permission_reply: HTTP "
             f"{', '.join(str(status) for _, status in posts) or '-'}"]
    if stored is not None:
        until = iso(stored.expiration_time) if stored.expiration_time else "permanent"
        notes.append(f"stored beside the CDRs: {stored.status} until {until} via "
                     f"{stored.source} ({stored.response_source})")
    message_id = posts[0][0] if posts else "wamid.none"
    forged_body = call_permission_reply(message_id="wamid.forged", phone_number_id=phone_number_id,
                                        business_number=number, user_wa_id=wa_id)
    forged = signed_post(lab.webhook_url, "not-the-app-secret", forged_body)
    retry = signed_post(lab.webhook_url, APP_SECRET, call_permission_reply(
        message_id=message_id, phone_number_id=phone_number_id, business_number=number,
        user_wa_id=wa_id))
    replies = permission_counts(database)[1]
    notes.append(f"a forged copy (wrong app secret): HTTP {forged}; Meta's retry of the same "
                 f"message: HTTP {retry}, replies stored {replies}")
    passed = (posts[:1] == [(message_id, 200)] and stored is not None
              and stored.status == "granted" and stored.source == "webhook"
              and forged == 403 and retry == 200 and replies == 1)
    return PermissionStep("Meta's signed call_permission_reply received by `wa-esl webhook` "
                          "(signature checked, stored beside the CDRs)", passed, notes,
                          "" if passed else "expected one 200 post, a granted webhook "
                          "permission, 403 for the forgery and the retry stored once")


def passes_now(config: Path, number: str, user: str) -> PermissionStep:
    """`wa-esl preflight`: the same call now passes, under the webhook's permission."""
    ran = run_command([*wa_esl_command(), "preflight", "--config", str(config), "--from",
                       number, "--to", user])
    passed = (ran.exit_code == 0 and ran.stdout.startswith("pre-flight passed: permission and "
                                                           "limits checked")
              and "from Meta's call_permission_reply webhook" in ran.stdout)
    return PermissionStep(f"the same call from {number} to {user} passes pre-flight (the "
                          "permission and Graph's start_call limits checked)", passed,
                          [f"wa-esl preflight (exit {ran.exit_code}): {ran.text()}"],
                          "" if passed else "expected exit 0 under the webhook's permission")


def permission_steps(lab: PermissionLab, config: Path, number: str, phone_number_id: str,
                     database: Path, user: str = PERMISSION_USER) -> list[PermissionStep]:
    """The four steps that need no FreeSWITCH; the receiver is started from `config` here."""
    steps = [refused_first(lab, config, number, user)]
    lab.start_receiver(config)
    steps.append(request_sent(lab, config, number, user, database))
    steps.append(reply_received(lab, number, user, phone_number_id, database))
    steps.append(passes_now(config, number, user))
    return steps


def print_step(step: PermissionStep) -> None:
    print(f"\n[{'PASS' if step.passed else 'FAIL'}] {step.name}")
    for note in step.notes:
        print(f"  = {note}")
    if step.detail and not step.passed:
        print(f"  why: {step.detail}")


def section_line(number: str, user: str) -> str:
    return (f"\nlab: call-permission section: {number} -> {user}; Graph stand-in (call_permissions, "
            f"{GRAPH_RATE:.0f} requests/s then 613) posting Meta's signed replies to `wa-esl "
            "webhook` on loopback")


PLACED_NAME = "the same call placed through FreeSWITCH and answered; `call show` names the permission"


def run_without_freeswitch(folder: Path, missing: str,
                           number: tuple[str, str] = ("+15550100001", "100000000000001"),
                           ) -> list[PermissionStep]:
    """The section on its own site config; placing the call is reported skipped."""
    business_number, phone_number_id = number
    folder.mkdir(parents=True, exist_ok=True)
    with PermissionLab(folder) as lab:
        config = write_site(lab, folder, business_number, phone_number_id)
        lab.serve({phone_number_id: business_number})
        print(section_line(business_number, PERMISSION_USER))
        steps = permission_steps(lab, config, business_number, phone_number_id,
                                 folder / "cdr.sqlite3")
        for step in steps:
            print_step(step)
    print(f"\n[SKIP] {PLACED_NAME}: {missing}")
    return steps

