"""Shared fixtures: a real Kamailio edge on loopback, started once per test module. And the
`needs_freeswitch` marker: such tests are skipped with the reason where no FreeSWITCH is
installed, and the summary says how many ran and how many were skipped."""

from __future__ import annotations

from collections.abc import Generator, Iterator

import pytest

from lab.edge import LAB_PASSWORD, EdgeLab
from lab.edge_only_section import FAILURE_LIMIT as FAILURE_LIMIT  # re-exported for the tests
from lab.edge_only_section import UNSYNCED_NUMBER
from lab.edge_only_section import edge_overrides as edge_overrides
from lab.media.freeswitch_patch import is_patched
from provisioning.freeswitch_binary import freeswitch_binary, freeswitch_missing, freeswitch_version
from provisioning.kamailio_features import OLDEST, features_for, installed_features
from provisioning.kamailio_rpc import call

NEEDS_FREESWITCH = "needs_freeswitch"
INSTALLED_KAMAILIO = installed_features() or features_for(OLDEST)
"""What the Kamailio the tests start offers: a test of a 6.0-only feature skips before 6.0."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = freeswitch_missing()
    if missing is None:
        return
    for item in items:
        if item.get_closest_marker(NEEDS_FREESWITCH) is not None:
            item.add_marker(pytest.mark.skip(reason=missing))


def freeswitch_tests_line(outcomes: dict[str, str]) -> str:
    """`FreeSWITCH tests: 0 ran, 57 skipped (no FreeSWITCH ...)`: a run that tested less never
    reads like a full one."""
    ran = sum(1 for outcome in outcomes.values() if outcome == "ran")
    missing = freeswitch_missing()
    if missing is not None:
        why = missing
    else:
        binary = freeswitch_binary()
        why = (f"FreeSWITCH {freeswitch_version()} at {binary}, "
               f"{'patched' if is_patched(binary) else 'stock'}")
    return f"FreeSWITCH tests: {ran} ran, {len(outcomes) - ran} skipped ({why})"


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int,
                            config: pytest.Config) -> Generator[None]:
    """After the short test summary (a wrapper around the terminal reporter's), just above the
    final counts line."""
    yield
    outcomes: dict[str, str] = {}  # nodeid -> "ran" or "skipped"
    for reports in terminalreporter.stats.values():
        for report in reports:
            if not isinstance(report, pytest.TestReport) or NEEDS_FREESWITCH not in report.keywords:
                continue
            if report.skipped:
                outcomes[report.nodeid] = "skipped"
            else:
                outcomes.setdefault(report.nodeid, "ran")
    if outcomes:
        terminalreporter.write_line(freeswitch_tests_line(outcomes))

# the edge-only lab calls and these tests share one set of overrides (lab/edge_only_section.py)
SECOND_NUMBER = UNSYNCED_NUMBER  # configured, but no credentials are ever synced for it


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
