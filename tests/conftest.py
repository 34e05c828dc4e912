"""Shared fixtures: a real Kamailio edge on loopback, started once per test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.edge import LAB_PASSWORD, EdgeLab
from provisioning.kamailio_rpc import call

SECOND_NUMBER = "+15550100002"  # configured, but no credentials are ever synced for it
FAILURE_LIMIT = 3


def edge_overrides(**changes: object) -> dict[str, object]:
    """The example config plus a number without credentials and a low lockout threshold."""
    overrides: dict[str, object] = {
        "numbers": [
            {"business_number": "+15550100001", "phone_number_id": "100000000000001",
             "request_uri_user_params": {"tgrp": "wacall", "trunk-context": "byoc.example.com"}},
            {"business_number": SECOND_NUMBER, "phone_number_id": "100000000000002"},
        ],
        "auth": {"failure_limit": FAILURE_LIMIT},
    }
    overrides.update(changes)
    return overrides


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeLab]:
    folder = tmp_path_factory.mktemp("edge")
    with EdgeLab(folder, edge_overrides(),
                 passwords={"+15550100001": LAB_PASSWORD}) as lab:
        yield lab


@pytest.fixture
def clean_edge(edge: EdgeLab) -> EdgeLab:
    """The module's edge with its failed-digest counters forgotten."""
    call(edge.rpc_socket, "htable.flush", "wa_authfail")
    return edge


def sip_header(message: str, name: str) -> list[str]:
    """Values of header `name` (case-insensitive) in a raw SIP message, in order."""
    head = message.split("\r\n\r\n", 1)[0]
    values = []
    for line in head.split("\r\n")[1:]:
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            values.append(value.strip())
    return values


def first_request(messages: list[str], method: str) -> str:
    for message in messages:
        if message.startswith(method + " "):
            return message
    raise AssertionError(f"no {method} among {[m.split(chr(13))[0] for m in messages]}")
