"""Choosing a route for a user-initiated call: the first route whose every condition holds."""

from __future__ import annotations

from fnmatch import fnmatchcase

from esl.whatsapp_call import WhatsAppCall
from siteconfig.controller import Route


def _payload_matches(pattern: str | None, value: str | None) -> bool:
    return pattern is None or (value is not None and fnmatchcase(value, pattern))


def _equal(wanted: str | None, value: str | None) -> bool:
    return wanted is None or wanted == value


def route_matches(route: Route, call: WhatsAppCall) -> bool:
    match = route.match
    return (
        _equal(match.business_number, call.business_number)
        and _equal(match.tgrp, call.tgrp)
        and _equal(match.trunk_context, call.trunk_context)
        and _payload_matches(match.cta_payload, call.cta_payload)
        and _payload_matches(match.deeplink_payload, call.deeplink_payload)
    )


def choose_route(routes: tuple[Route, ...], call: WhatsAppCall) -> Route | None:
    """Routes are tried in file order, so put specific ones (payloads) before catch-alls."""
    for route in routes:
        if route_matches(route, call):
            return route
    return None
