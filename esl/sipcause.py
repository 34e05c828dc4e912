"""SIP final status -> FreeSWITCH hangup cause, as sofia does it.

From ``sofia_glue_sip_cause_to_freeswitch()``: the stand-in uses it to hang up refused
business-initiated calls with the cause FreeSWITCH would report, and the controller uses it to
tell, from a hangup cause alone, which SIP answers could have produced it.
"""

from __future__ import annotations

_SIP_TO_CAUSE: dict[int, str] = {
    200: "NORMAL_CLEARING",
    401: "CALL_REJECTED",
    402: "CALL_REJECTED",
    403: "CALL_REJECTED",
    407: "CALL_REJECTED",
    603: "CALL_REJECTED",
    608: "CALL_REJECTED",
    404: "UNALLOCATED_NUMBER",
    485: "NO_ROUTE_DESTINATION",
    604: "NO_ROUTE_DESTINATION",
    408: "RECOVERY_ON_TIMER_EXPIRE",
    504: "RECOVERY_ON_TIMER_EXPIRE",
    410: "NUMBER_CHANGED",
    413: "INTERWORKING",
    414: "INTERWORKING",
    416: "INTERWORKING",
    420: "INTERWORKING",
    421: "INTERWORKING",
    423: "INTERWORKING",
    505: "INTERWORKING",
    513: "INTERWORKING",
    480: "NO_USER_RESPONSE",
    400: "NORMAL_TEMPORARY_FAILURE",
    481: "NORMAL_TEMPORARY_FAILURE",
    500: "NORMAL_TEMPORARY_FAILURE",
    503: "NORMAL_TEMPORARY_FAILURE",
    486: "USER_BUSY",
    600: "USER_BUSY",
    484: "INVALID_NUMBER_FORMAT",
    488: "INCOMPATIBLE_DESTINATION",
    606: "INCOMPATIBLE_DESTINATION",
    502: "NETWORK_OUT_OF_ORDER",
    405: "SERVICE_UNAVAILABLE",
    406: "SERVICE_NOT_IMPLEMENTED",
    415: "SERVICE_NOT_IMPLEMENTED",
    501: "SERVICE_NOT_IMPLEMENTED",
    482: "EXCHANGE_ROUTING_ERROR",
    483: "EXCHANGE_ROUTING_ERROR",
    487: "ORIGINATOR_CANCEL",
}


def hangup_cause_for_sip_status(status: int) -> str:
    """The hangup cause FreeSWITCH reports for a SIP final answer."""
    return _SIP_TO_CAUSE.get(status, "NORMAL_UNSPECIFIED")
