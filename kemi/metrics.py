"""The edge's own Prometheus counters, bumped where the edge decides (xhttp_prom via KEMI).

Declared here once: the renderer writes one `prom_counter` modparam per entry of METRICS, and
the edge bumps them through EdgeMetrics. Label values come from closed sets only (the
diagnosis codes of kemi/diagnoses.py, the outcomes below): a value from outside becomes
"other", so no number, Call-ID or header text can ever create a time series. Kamailio's own
statistics (shared memory, TLS connections, transactions, dialogs, requests by method, the
script's drop counters) are exported by xhttp_prom itself and need nothing here.

Cost: one KSR call per counted event (xhttp_prom looks the counter up under a lock in shared
memory); never per packet, only per decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kemi.diagnoses import DIGEST_ANSWERS, EDGE_DIAGNOSES, META_ANSWERS

SOCKET_NAME = "metrics"
"""Name of the listen socket that serves /metrics (kamailio.cfg.j2); nothing else serves it."""
PATH = "/metrics"

UIC_OUTCOMES = (
    "answered",                 # FreeSWITCH answered 2xx
    "bad_request_uri",          # request URI not a business number of ours (4xx)
    "unknown_business_number",  # 404: number not served here
    "locked_out",               # 403: source locked out after failed digests
    "no_credentials",           # 503: no HA1 for the number (run provision sync)
    "bad_credentials",          # 400: credentials the edge cannot check
    "no_freeswitch",            # 503: no FreeSWITCH node available
    "freeswitch_refused",       # FreeSWITCH answered a final negative reply, no node left
    "rtpengine_unreachable",    # 503: rtpengine did not take Meta's offer (anchor = rtpengine)
    "cancelled",                # Meta cancelled before an answer
)
BIC_OUTCOMES = (
    "answered",
    *sorted({*EDGE_DIAGNOSES, *(a.diagnosis.code for a in META_ANSWERS + DIGEST_ANSWERS),
             "meta_other"}),
)
"""Answered, or refused with one of kemi/diagnoses.py's codes (the edge's or Meta's answer)."""
IN_DIALOG_REFUSALS = ("reinvite_refused", "refer_unsupported")
DIGEST_RESULTS = ("challenged", "stale", "accepted", "failed", "bad_credentials", "locked_out",
                  "no_credentials")
"""challenged/stale: a 407 (or 401) sent; failed: a wrong digest (also challenged again);
the last three end the call, with the same name as its UIC outcome."""
MEDIA_ENDINGS = ("both_ways", "no_business_media", "no_meta_media", "no_media",
                 "rtpengine_session_lost")
"""What rtpengine saw when an answered call ended ([media] anchor = rtpengine; kemi/media_stats.py):
media both ways, a side silent, or rtpengine no longer holding the call (restarted mid-call)."""
OTHER = "other"


@dataclass(frozen=True)
class Metric:
    """One xhttp_prom declaration; help text without quotes (the modparam does not escape)."""

    kind: str  # prom_counter or prom_gauge
    name: str  # shown with the prefix wasip_edge_
    labels: tuple[str, ...]
    help: str


METRICS = (
    Metric("prom_counter", "calls_total", ("direction", "outcome"),
           "INVITEs outside a dialog by direction (uic, bic) and outcome: answered or why not"),
    Metric("prom_counter", "in_dialog_refusals_total", ("diagnosis",),
           "In-dialog requests the edge refused (re-INVITE, UPDATE, REFER)"),
    Metric("prom_counter", "digest_total", ("result",),
           "Digest checks of INVITEs from Meta: challenged, stale, accepted, failed, ..."),
    Metric("prom_counter", "media_endings_total", ("result",),
           "Answered calls ended with rtpengine anchoring: media both ways, a silent side, or "
           "rtpengine_session_lost (it no longer held the call: restarted mid-call)"),
    Metric("prom_counter", "credential_reloads_total", (),
           "Credential reloads (htable.reload wa_creds by provision)"),
    Metric("prom_gauge", "credential_reload_timestamp_seconds", (),
           "Unix time of the last credential reload"),
    Metric("prom_gauge", "credentials_loaded", (),
           "Entries in the credential table after the last reload"),
)

_UIC = frozenset(UIC_OUTCOMES)
_BIC = frozenset(BIC_OUTCOMES)
_IN_DIALOG = frozenset(IN_DIALOG_REFUSALS)
_DIGEST = frozenset(DIGEST_RESULTS)
_MEDIA = frozenset(MEDIA_ENDINGS)


def bounded(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else OTHER


class PromApi(Protocol):
    """The part of KSR.xhttp_prom the edge uses (KEMI: counter_inc_l<number of labels>)."""

    def counter_inc_l0(self, name: str, number: int) -> int: ...
    def counter_inc_l1(self, name: str, number: int, l1: str) -> int: ...
    def counter_inc_l2(self, name: str, number: int, l1: str, l2: str) -> int: ...


class EdgeMetrics:
    """Bumps the counters through `prom` (KSR.xhttp_prom), or does nothing when it is None
    (metrics.edge_listen unset: the module is not loaded and KSR has no xhttp_prom)."""

    def __init__(self, prom: PromApi | None) -> None:
        self.prom = prom

    def call(self, direction: str, outcome: str) -> None:
        if self.prom is None:
            return
        if direction == "bic":
            self.prom.counter_inc_l2("calls_total", 1, "bic", bounded(outcome, _BIC))
        else:
            self.prom.counter_inc_l2("calls_total", 1, "uic", bounded(outcome, _UIC))

    def in_dialog_refusal(self, code: str) -> None:
        if self.prom is not None:
            self.prom.counter_inc_l1("in_dialog_refusals_total", 1, bounded(code, _IN_DIALOG))

    def digest(self, result: str) -> None:
        if self.prom is not None:
            self.prom.counter_inc_l1("digest_total", 1, bounded(result, _DIGEST))

    def media_ending(self, result: str) -> None:
        if self.prom is not None:
            self.prom.counter_inc_l1("media_endings_total", 1, bounded(result, _MEDIA))

    def create_series(self) -> None:
        """Export every labelled series at 0 from the start (adding 0 creates a missing
        counter and leaves an existing one unchanged), so a dashboard shows a refusal code
        that never happened as 0 rather than "no data", and rate() sees the first one."""
        if self.prom is None:
            return
        for outcome in UIC_OUTCOMES:
            self.prom.counter_inc_l2("calls_total", 0, "uic", outcome)
        for outcome in BIC_OUTCOMES:
            self.prom.counter_inc_l2("calls_total", 0, "bic", outcome)
        for code in IN_DIALOG_REFUSALS:
            self.prom.counter_inc_l1("in_dialog_refusals_total", 0, code)
        for result in DIGEST_RESULTS:
            self.prom.counter_inc_l1("digest_total", 0, result)
        for result in MEDIA_ENDINGS:
            self.prom.counter_inc_l1("media_endings_total", 0, result)
        self.prom.counter_inc_l0("credential_reloads_total", 0)


class HttpApi(Protocol):
    """KSR calls the /metrics event route makes (kx, xhttp, xhttp_prom)."""

    def get_rcv_sock_name(self) -> str | None: ...
    def get_method(self) -> str: ...
    def get_hu(self) -> str | None: ...
    def xhttp_reply(self, code: int, reason: str, ctype: str, body: str) -> int: ...
    def dispatch(self) -> int: ...


def http_action(socket_name: str | None, method: str, url: str) -> str:
    """What to do with one HTTP request: "serve" /metrics, answer "not_found", or "ignore".

    Only the metrics socket answers at all. xhttp sees HTTP on every TCP and TLS socket, Meta's
    included: there the request gets no answer, exactly as without xhttp, so a scanner learns
    nothing and no figure about the calls leaves through the Internet-facing socket.
    """
    if socket_name != SOCKET_NAME:
        return "ignore"
    if method == "GET" and url.split("?", 1)[0] == PATH:
        return "serve"
    return "not_found"


def serve_http(kx: HttpApi, xhttp: HttpApi, prom: HttpApi) -> None:
    """The edge's xhttp event route: /metrics on the metrics socket, nothing elsewhere."""
    action = http_action(kx.get_rcv_sock_name(), str(kx.get_method()), str(xhttp.get_hu() or ""))
    if action == "serve":
        prom.dispatch()
    elif action == "not_found":
        xhttp.xhttp_reply(404, "Not Found", "text/plain", "only /metrics here\n")
