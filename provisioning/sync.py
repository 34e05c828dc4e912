"""`provision sync`: Meta's SIP passwords -> HA1 pairs in the store Kamailio reads.

Per number: GET settings with include_sip_credentials=true, pick this app's server entry, turn
its password into the two HA1 digests at once (the password is not kept), and queue the pair.
Queued pairs are written in batches, each batch one transaction, so a crash or Ctrl-C leaves every
number with either its old or its new pair, never half of one; whatever was fetched before an
interruption is still written on the way out. A number that fails is reported and does not stop
the others. Running it again changes nothing that is already right (outcome `unchanged`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from graphapi.client import GraphClient
from graphapi.errors import GraphError
from provisioning.credential_store import Credential, StoreError, WriteOutcome, credential_for
from provisioning.settings_model import SettingsFormatError, parse_settings
from provisioning.store_backend import CredentialBackend
from siteconfig.model import Number


class SyncOutcome(Enum):
    UNCHANGED = "unchanged"
    UPDATED = "updated"
    SIP_DISABLED = "sip_disabled"
    NO_SERVER = "no_server"
    ERROR = "error"


@dataclass
class NumberSync:
    """What happened to one number; never holds the password."""

    business_number: str
    phone_number_id: str
    outcome: SyncOutcome = SyncOutcome.ERROR
    detail: str = ""
    graph_error: GraphError | None = None

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"business_number": self.business_number,
                                 "phone_number_id": self.phone_number_id,
                                 "outcome": self.outcome.value, "detail": self.detail}
        if self.graph_error is not None:
            entry["graph_error"] = self.graph_error.as_dict()
        return entry


@dataclass(frozen=True)
class SyncOptions:
    batch_size: int = 500
    flush_interval_s: float = 1.0
    workers: int = 32


class _Batcher:
    """Pending credentials, written one transaction per batch."""

    def __init__(self, store: CredentialBackend, realm: str, options: SyncOptions) -> None:
        self.store = store
        self.realm = realm
        self.options = options
        self.pending: list[tuple[NumberSync, Credential]] = []
        self.last_flush = time.monotonic()

    def add(self, result: NumberSync, credential: Credential) -> None:
        self.pending.append((result, credential))
        if (len(self.pending) >= self.options.batch_size
                or time.monotonic() - self.last_flush >= self.options.flush_interval_s):
            self.flush()

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        self.last_flush = time.monotonic()
        if not batch:
            return
        try:
            outcomes = self.store.put_many([c for _, c in batch], self.realm, "sync")
        except StoreError as error:
            for result, _ in batch:
                result.outcome, result.detail = SyncOutcome.ERROR, f"store write failed: {error}"
            return
        for result, credential in batch:
            written = outcomes[credential.business_number]
            if written is WriteOutcome.UNCHANGED:
                result.outcome, result.detail = SyncOutcome.UNCHANGED, "store already up to date"
            else:
                result.outcome = SyncOutcome.UPDATED
                result.detail = "new credential" if written is WriteOutcome.CREATED else "password changed"


async def fetch_credential(client: GraphClient, app_id: str, realm: str, number: Number,
                           result: NumberSync) -> Credential | None:
    """Fill `result` for states that need no write; return the credential to write otherwise."""
    try:
        settings = parse_settings(await client.get_settings(number.phone_number_id, True))
    except GraphError as error:
        result.outcome, result.detail, result.graph_error = SyncOutcome.ERROR, error.explain(), error
        return None
    except SettingsFormatError as error:
        result.outcome, result.detail = SyncOutcome.ERROR, f"unexpected settings answer: {error}"
        return None
    ours = settings.server_for(app_id)
    if settings.sip_status != "ENABLED":
        result.outcome = SyncOutcome.SIP_DISABLED
        result.detail = "SIP is DISABLED on Meta: store left as it is (run provision apply)"
        return None
    if ours is None:
        result.outcome = SyncOutcome.NO_SERVER
        result.detail = f"no SIP server for app {app_id} on this number (run provision apply)"
        return None
    if ours.password is None:
        result.outcome = SyncOutcome.ERROR
        result.detail = ("Graph returned no sip_user_password for this app's server: check that the "
                         "token's app has whatsapp_business_messaging")
        return None
    return credential_for(number.business_number, ours.password.get_secret_value(), realm)


async def sync_numbers(client: GraphClient, store: CredentialBackend, realm: str, app_id: str,
                       numbers: list[Number], options: SyncOptions | None = None,
                       on_progress: Callable[[], None] | None = None) -> list[NumberSync]:
    """Sync every number; results come back in the order of `numbers`."""
    options = options or SyncOptions()
    results = [NumberSync(n.business_number, n.phone_number_id) for n in numbers]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(numbers)):
        queue.put_nowait(index)
    batcher = _Batcher(store, realm, options)

    async def worker() -> None:
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            credential = await fetch_credential(client, app_id, realm, numbers[index], results[index])
            if credential is not None:
                batcher.add(results[index], credential)
            if on_progress is not None:
                on_progress()  # outcomes of queued writes are final only after the flush

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(options.workers, len(numbers))))))
    finally:
        batcher.flush()  # also on Ctrl-C / cancellation: what was fetched is complete, keep it
    return results


def summary(results: list[NumberSync]) -> dict[str, int]:
    counts = {outcome.value: 0 for outcome in SyncOutcome}
    for result in results:
        counts[result.outcome.value] += 1
    return counts
