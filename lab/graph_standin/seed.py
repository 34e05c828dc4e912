"""Deterministic numbers for tests and the benchmark: same ids on both sides of the wire."""

from __future__ import annotations

from lab.graph_standin.permissions import PermissionBook
from lab.graph_standin.state import GraphState

FIRST_ID = 200_000_000_000_000
FIRST_NUMBER = 15_550_000_000


def seeded_number(index: int) -> tuple[str, str]:
    """(business_number, phone_number_id) of the `index`th seeded number."""
    return f"+{FIRST_NUMBER + index}", str(FIRST_ID + index)


def seed_numbers(state: GraphState, count: int, app_id: str, hostname: str) -> list[tuple[str, str]]:
    """Add `count` numbers, each SIP-enabled with a server for `app_id`."""
    seeded = []
    for index in range(count):
        business_number, phone_number_id = seeded_number(index)
        state.add_number(phone_number_id)
        state.add_server(phone_number_id, app_id, hostname)
        seeded.append((business_number, phone_number_id))
    return seeded


FIRST_USER = 15_559_000_000


def seeded_user(index: int) -> str:
    """The `index`th seeded WhatsApp user (+E164): same on both sides of the wire."""
    return f"+{FIRST_USER + index}"


def grant_users(book: PermissionBook, phone_number_ids: list[str], count: int) -> None:
    """Give the first `count` seeded users a temporary call permission toward each number."""
    for phone_number_id in phone_number_ids:
        for index in range(count):
            book.set_permission(phone_number_id, seeded_user(index)[1:], "granted")
