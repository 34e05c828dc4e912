"""A real HTTP server on loopback that answers like graph.facebook.com's calling settings.

`GraphStandin` runs `http.server`'s threaded server (HTTP/1.1 keep-alive, a thread per
connection) in a background thread. The access token decides the app, as on Graph, so two tokens
play two apps sharing numbers. Faults and a rate limiter can be switched on per test.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lab.graph_standin.faults import FaultPlan, FaultRule, RateLimiter
from lab.graph_standin.permissions import PermissionBook, PermissionReply
from lab.graph_standin.state import GraphApiError, GraphState
from lab.graph_standin.webhook_post import call_permission_reply, signed_post

PATH = re.compile(r"^/(v(\d+)\.(\d+))/([^/]+)(?:/([a-z_]+))?$")
MIN_MAJOR_VERSION = 17
MAX_FAULT_DELAY_S = 30.0


@dataclass
class StandinStats:
    """Counters the tests and the benchmark read back."""

    requests: int = 0
    rate_limited: int = 0
    faults: int = 0
    by_route: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, route: str) -> None:
        with self.lock:
            self.requests += 1
            self.by_route[route] = self.by_route.get(route, 0) + 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 256
    standin: GraphStandin


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms stalls
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read stats, not an access log (which would also show tokens)."""

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        standin = self.server.standin
        body = self._read_body()
        url = urlsplit(self.path)
        standin.stats.count(f"{method} {url.path.rsplit('/', 1)[-1]}")
        rule = standin.faults.take(method, url.path)
        if rule is not None:
            with standin.stats.lock:
                standin.stats.faults += 1
            if self._fault(rule):
                return
        try:
            status, answer = standin.answer(method, url.path, parse_qs(url.query),
                                            self.headers.get("Authorization", ""), body)
        except GraphApiError as error:
            status, answer = error.status, error.envelope(_fbtrace_id())
            if error.retry_after is not None:
                self._send(status, answer, {"Retry-After": _seconds(error.retry_after)})
                return
        self._send(status, answer)

    def _fault(self, rule: FaultRule) -> bool:
        """Play `rule`; True when the request has been fully dealt with."""
        if rule.kind == "reset":
            self.close_connection = True
            self.connection.close()
            return True
        if rule.kind == "timeout":
            time.sleep(min(rule.delay_s, MAX_FAULT_DELAY_S))
            return False  # then answer normally, if the client is still there
        if rule.kind == "rate_limit":
            error = GraphApiError(rule.status if rule.status != 500 else 429,
                                  rule.code if rule.code != 1 else 130429,
                                  "(#130429) Rate limit hit", retry_after=rule.retry_after)
        else:
            error = GraphApiError(rule.status, rule.code,
                                  "An unexpected error has occurred. Please retry your request later.")
        headers = {"Retry-After": _seconds(error.retry_after)} if error.retry_after is not None else {}
        self._send(error.status, error.envelope(_fbtrace_id()), headers)
        return True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(min(length, 1 << 20)) if length > 0 else b""

    def _send(self, status: int, answer: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            self.close_connection = True  # the client gave up (timeout fault): nothing to do


def _fbtrace_id() -> str:
    return "A" + secrets.token_urlsafe(15)


def _seconds(value: float | None) -> str:
    assert value is not None
    return str(int(value)) if float(value).is_integer() else f"{value:.3f}"


class GraphStandin:
    """The server; `tokens` maps access token -> app id. Use as a context manager."""

    def __init__(self, tokens: dict[str, str], state: GraphState | None = None,
                 rate_limiter: RateLimiter | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.tokens = dict(tokens)
        self.state = state or GraphState()
        self.rate_limiter = rate_limiter
        self.faults = FaultPlan()
        self.stats = StandinStats()
        self.permissions = PermissionBook()
        self.permissions.on_reply = self._post_reply
        self.webhook_url: str | None = None
        self.webhook_posts: list[tuple[str, int]] = []  # (message id, HTTP status or 0)
        self._webhook_secret = ""
        self._webhook_numbers: dict[str, str] = {}
        self._webhook_threads: list[threading.Thread] = []
        self._server = _Server((host, port), _Handler)
        self._server.standin = self
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> GraphStandin:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="graph-standin", daemon=True)
        self._thread.start()
        return self

    def post_webhooks_to(self, url: str, app_secret: str, numbers: dict[str, str]) -> None:
        """Post each user's reply to a permission request to ``url``, signed with ``app_secret``,
        as Meta does; ``numbers`` maps phone_number_id to the business number (+E164)."""
        self.webhook_url, self._webhook_secret = url, app_secret
        self._webhook_numbers = dict(numbers)

    def wait_for_webhooks(self, timeout: float = 10.0) -> None:
        """Until every webhook post started so far has been answered (or ``timeout``)."""
        deadline = time.monotonic() + timeout
        for thread in list(self._webhook_threads):
            thread.join(max(0.0, deadline - time.monotonic()))

    def _post_reply(self, reply: PermissionReply) -> None:
        """Meta posts the reply after it answered the request: a thread of its own."""
        if self.webhook_url is None:
            return
        body = call_permission_reply(
            message_id=reply.message_id, phone_number_id=reply.phone_number_id,
            business_number=self._webhook_numbers.get(reply.phone_number_id, "+0"),
            user_wa_id=reply.user_wa_id, accept=reply.accept, is_permanent=reply.is_permanent,
            expiration_timestamp=reply.expiration_timestamp)
        url, secret = self.webhook_url, self._webhook_secret

        def post() -> None:
            try:
                status = signed_post(url, secret, body)
            except Exception:  # httpx's errors: the receiver is down (Meta would retry later)
                status = 0
            self.webhook_posts.append((reply.message_id, status))

        thread = threading.Thread(target=post, name="graph-standin-webhook", daemon=True)
        self._webhook_threads.append(thread)
        thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> GraphStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- routing ---------------------------------------------------------------------------

    def _app_for(self, authorization: str) -> str:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise GraphApiError(400, 2500, "An active access token must be used to query "
                                "information about the current user.")
        app_id = self.tokens.get(token.strip())
        if app_id is None:
            raise GraphApiError(401, 190, "Invalid OAuth access token - Cannot parse access token",
                                subcode=463 if token.startswith("expired") else None)
        return app_id

    def answer(self, method: str, path: str, query: dict[str, list[str]], authorization: str,
               body: bytes) -> tuple[int, dict[str, Any]]:
        """Route one request; raises GraphApiError for any error answer."""
        match = PATH.match(path)
        if match is None:
            raise GraphApiError(400, 2500, f"Unknown path components: {path}")
        version, major, node, edge = match.group(1), int(match.group(2)), match.group(4), match.group(5)
        if major < MIN_MAJOR_VERSION:
            raise GraphApiError(400, 2635, f"(#2635) You are calling a deprecated version of the "
                                f"Graph API ({version}); upgrade to v{MIN_MAJOR_VERSION}.0 or higher")
        app_id = self._app_for(authorization)
        if self.rate_limiter is not None and not self.rate_limiter.allow(app_id):
            with self.stats.lock:
                self.stats.rate_limited += 1
            raise GraphApiError(self.rate_limiter.status, self.rate_limiter.code,
                                f"(#{self.rate_limiter.code}) Rate limit hit: too many requests "
                                "for this app", retry_after=self.rate_limiter.retry_after)
        if node == "app" and edge is None and method == "GET":
            return 200, {"id": app_id, "name": f"stand-in app {app_id}"}
        if edge == "settings" and method == "GET":
            include = query.get("include_sip_credentials", ["false"])[0].lower() == "true"
            return 200, self.state.get_settings(app_id, node, include)
        if edge == "settings" and method == "POST":
            try:
                parsed = json.loads(body or b"null")
            except ValueError:
                raise GraphApiError(400, 100, "(#100) The request body is not valid JSON") from None
            return 200, self.state.post_settings(app_id, node, parsed)
        if edge == "call_permissions" and method == "GET":
            self.state.check_access(app_id, node)
            return 200, self.permissions.call_permissions(node, query)
        if edge == "messages" and method == "POST":
            self.state.check_access(app_id, node)
            try:
                parsed = json.loads(body or b"null")
            except ValueError:
                raise GraphApiError(400, 100, "(#100) The request body is not valid JSON") from None
            return 200, self.permissions.post_message(node, parsed)
        if edge == "calls" and method == "POST":
            return 200, self.state.post_calls(app_id, node)
        raise GraphApiError(400, 100, f"(#100) Unsupported {method} request on /{node}/{edge or ''}",
                            "GraphMethodException", subcode=33)
