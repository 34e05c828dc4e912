"""Graph API error envelopes turned into messages an operator can act on.

Graph answers `{"error": {"message", "type", "code", "error_subcode"?, "fbtrace_id"}}`. The raw
message is often vague, so each known code gets a sentence that says what it means for SIP
calling and what to do; the fbtrace_id is always kept, since Meta support asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Graph codes that mean "slow down and try again": 4 app-level, 17 user-level, 32 page-level,
# 613 calls-per-hour, 80007 WhatsApp account rate, 130429 WhatsApp throughput.
RATE_LIMIT_CODES = frozenset({4, 17, 32, 613, 80007, 130429})
# Codes Graph documents as transient ("retry your request later").
TRANSIENT_CODES = frozenset({1, 2, 131000, 131016})

EXPLANATIONS: dict[int, tuple[str, str]] = {
    131055: ("the number has SIP enabled, so the calling Graph endpoints (/calls) and calling "
             "webhooks are switched off for it",
             "place and answer calls over SIP, or disable SIP on the number to use the Calling API"),
    190: ("the access token is invalid or expired",
          "create a new system-user token with whatsapp_business_management and "
          "whatsapp_business_messaging and put it in the token file or environment variable"),
    2500: ("no access token was sent", "set the token environment variable or --token-file"),
    10: ("the app lacks permission for this number",
         "grant the app whatsapp_business_management (and whatsapp_business_messaging for SIP "
         "calls) on the WhatsApp Business Account that owns the number"),
    200: ("the token lacks a permission this call needs",
          "re-issue the token with whatsapp_business_management and whatsapp_business_messaging"),
    100: ("Graph refused a parameter (or does not know this phone number id)",
          "check phone_number_id in the site config and the settings being sent"),
    2635: ("the configured Graph API version is too old", "set graph.api_version to v21.0 or newer"),
    138000: ("calling is not enabled on this number", "enable calling in the number's settings first"),
    138018: ("the number does not meet the calling prerequisites",
             "check messaging limits, quality rating and the business's verification"),
    138006: ("the user has not granted this business a call permission (or is not on WhatsApp, "
             "or has not accepted the terms)",
             "send a permission request: provision permission request --from NUMBER --to USER"),
    138017: ("the user has already granted a permanent call permission",
             "no request is needed: call the user"),
}
for _code in RATE_LIMIT_CODES:
    EXPLANATIONS[_code] = ("Graph's rate limit was hit", "wait and retry; lower graph.concurrency")


@dataclass(eq=False)
class GraphError(Exception):
    """One error answer from Graph (or a network failure when `status` is 0)."""

    status: int
    code: int
    message: str
    error_type: str = ""
    subcode: int | None = None
    fbtrace_id: str | None = None
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.explain()

    @property
    def retryable(self) -> bool:
        return (self.status == 0 or self.status >= 500 or self.status == 429
                or self.code in RATE_LIMIT_CODES or self.code in TRANSIENT_CODES)

    @property
    def rate_limited(self) -> bool:
        return self.status == 429 or self.code in RATE_LIMIT_CODES

    @property
    def auth_problem(self) -> bool:
        """The token or the app's permissions, not the number, are at fault."""
        return self.code in (190, 2500, 10, 200) or 200 <= self.code <= 299

    def explain(self) -> str:
        if self.status == 0:
            return f"cannot reach Graph: {self.message}"
        meaning, fix = EXPLANATIONS.get(self.code, (None, None))
        if meaning is None and self.status >= 500:
            meaning, fix = "Graph had an internal error", "retry later"
        head = f"{meaning}: {fix}" if meaning else self.message
        code = f"{self.code}" + (f"/{self.subcode}" if self.subcode is not None else "")
        trace = f", fbtrace_id {self.fbtrace_id}" if self.fbtrace_id else ""
        detail = f" (Graph error {code}, HTTP {self.status}: {self.message}{trace})" if meaning else (
            f" (Graph error {code}, HTTP {self.status}{trace})")
        return head + detail

    def as_dict(self) -> dict[str, Any]:
        return {"http_status": self.status, "code": self.code, "subcode": self.subcode,
                "type": self.error_type, "message": self.message, "fbtrace_id": self.fbtrace_id,
                "explanation": self.explain()}


@dataclass(eq=False)
class NoPermissionError(GraphError):
    """138006: no approved call permission (SIP's ``403 No Approved Call Permission Found``)."""


@dataclass(eq=False)
class PermanentPermissionExists(GraphError):
    """138017: a permission request to a user who already granted a permanent one."""


@dataclass(eq=False)
class PrerequisitesNotMet(GraphError):
    """138018: the number does not meet the calling prerequisites."""


@dataclass(eq=False)
class RateLimitError(GraphError):
    """613 and the other rate-limit codes (and HTTP 429): slow down, then retry."""


@dataclass(eq=False)
class EndpointRefused(GraphError):
    """Graph will not answer this endpoint for this number (e.g. ``call_permissions`` for a
    number with SIP enabled: Meta does not say whether it answers there)."""

    endpoint: str = ""

    def explain(self) -> str:
        trace = f", fbtrace_id {self.fbtrace_id}" if self.fbtrace_id else ""
        return (f"Graph refuses {self.endpoint} for this number (Graph error {self.code}, HTTP "
                f"{self.status}: {self.message}{trace}): Meta may not offer it to numbers with "
                "SIP enabled, or the phone_number_id is wrong. Permissions from Meta's "
                "call_permission_reply webhook (wa-esl webhook) are used instead; without one, "
                "place the call with --force")


TYPED_ERRORS: dict[int, type[GraphError]] = {
    138006: NoPermissionError, 138017: PermanentPermissionExists, 138018: PrerequisitesNotMet,
    **{code: RateLimitError for code in RATE_LIMIT_CODES},
}
"""Codes that get a class of their own, so callers catch what they mean, not a number."""


def refused_endpoint(error: GraphError, endpoint: str) -> EndpointRefused | None:
    """``error`` as EndpointRefused when it says Graph does not serve ``endpoint`` here:
    131055 (SIP enabled: calling endpoints off) or 100/33 (object does not support this)."""
    if error.code == 131055 or (error.code == 100 and error.subcode == 33):
        return EndpointRefused(error.status, error.code, error.message, error.error_type,
                               error.subcode, error.fbtrace_id, error.retry_after, endpoint)
    return None


def network_error(what: str) -> GraphError:
    return GraphError(0, 0, what)


def parse_error(status: int, body: Any, retry_after: float | None = None) -> GraphError:
    """Read Graph's error envelope; anything else becomes a plain HTTP error."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return GraphError(status, 0, f"HTTP {status} without a Graph error envelope",
                          retry_after=retry_after)
    code = error.get("code")
    subcode = error.get("error_subcode")
    kind = TYPED_ERRORS.get(code, GraphError) if isinstance(code, int) else GraphError
    if kind is GraphError and status == 429:
        kind = RateLimitError
    return kind(
        status=status,
        code=code if isinstance(code, int) else 0,
        message=str(error.get("message", ""))[:500],
        error_type=str(error.get("type", "")),
        subcode=subcode if isinstance(subcode, int) else None,
        fbtrace_id=str(error["fbtrace_id"]) if error.get("fbtrace_id") else None,
        retry_after=retry_after,
    )
