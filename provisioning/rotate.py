"""`provision rotate-password`: Meta's documented three-step reset, guarded.

Graph has no "reset password" call. The password is regenerated when this app's server is
removed with SIP disabled and then added again: (1) disable + clear servers, (2) enable with the
server, (3) GET with credentials. It is irreversible, so the current credential is first made
sure to be in the store (its HA1 pair goes to the history table when the new one replaces it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphapi.client import GraphClient
from graphapi.errors import GraphError
from provisioning.credential_store import StoreError, credential_for
from provisioning.settings_model import ServerEntry, SettingsFormatError, parse_settings
from provisioning.store_backend import CredentialBackend
from siteconfig.model import Number

WINDOW_ACCOUNT = (
    "During the rotation: calls already connected go on (the digest is only checked on the first "
    "INVITE). Between step 1 (SIP disabled, server cleared) and step 2 (re-enabled), Meta does not "
    "send this number's calls to the edge and business-initiated calls are refused. Between step 2 "
    "and the Kamailio reload (normally well under a second) Meta already uses the new password, "
    "which the edge does not know yet: a call arriving then is challenged again and fails. If the "
    "rotation stops after step 1, the number stays DISABLED without a server: run "
    "`provision apply` (then `provision sync`) to bring it back.")


class RotationError(Exception):
    """The rotation stopped; `stage` says how far it got, which decides what to do next."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass
class RotationResult:
    business_number: str
    steps: list[str] = field(default_factory=list)
    new_password: str | None = None  # shown only with --show-secrets
    srtp_restored: bool = False
    problem: str = ""  # the password was rotated, but something needs attention (exit code 3)

    def as_dict(self, show_secrets: bool) -> dict[str, Any]:
        entry: dict[str, Any] = {"business_number": self.business_number, "steps": self.steps,
                                 "srtp_restored": self.srtp_restored, "problem": self.problem}
        if show_secrets:
            entry["sip_user_password"] = self.new_password
        return entry


async def rotate_password(client: GraphClient, store: CredentialBackend, realm: str, app_id: str,
                          number: Number) -> RotationResult:
    """Run the reset for `number`; raises RotationError (stage, message) when it cannot finish."""
    result = RotationResult(number.business_number)
    pnid = number.phone_number_id
    try:
        before = parse_settings(await client.get_settings(pnid, True))
    except GraphError as error:
        raise RotationError("not started", error.explain()) from None
    except SettingsFormatError as error:
        raise RotationError("not started", f"unexpected settings answer: {error}") from None
    ours = before.server_for(app_id)
    if ours is None or ours.password is None:
        raise RotationError("not started", f"no SIP server (or password) for app {app_id} on "
                            f"{number.business_number}: nothing to rotate; run provision apply first")
    old = ours.password.get_secret_value()
    try:
        store.put_many([credential_for(number.business_number, old, realm)], realm, "before-rotation")
    except StoreError as error:
        raise RotationError("not started", f"cannot record the current credential: {error}") from None
    result.steps.append("current credential recorded in the store")
    server: dict[str, Any] = _server_body(ours)
    try:
        await client.update_settings(pnid, {"sip": {"status": "DISABLED", "servers": []}})
    except GraphError as error:
        raise RotationError("not started", f"step 1 (disable + clear) failed: {error.explain()}") from None
    result.steps.append("step 1: SIP disabled, this app's server cleared")
    try:
        await client.update_settings(pnid, {"sip": {"status": "ENABLED", "servers": [server]}})
    except GraphError as error:
        raise RotationError("disabled", f"step 2 (re-enable) failed: {error.explain()}; "
                            f"{number.business_number} is DISABLED on Meta without a server: run "
                            "provision apply, then provision sync") from None
    result.steps.append(f"step 2: SIP re-enabled with {server['hostname']}:{server['port']}")
    try:
        after = parse_settings(await client.get_settings(pnid, True))
    except GraphError as error:
        raise RotationError("enabled", f"step 3 (fetch) failed: {error.explain()}; run provision "
                            "sync to fetch the new password") from None
    except SettingsFormatError as error:
        raise RotationError("enabled", f"step 3 (fetch): unexpected settings answer: {error}; run "
                            "provision sync to fetch the new password") from None
    new_entry = after.server_for(app_id)
    if new_entry is None or new_entry.password is None:
        raise RotationError("enabled", "step 3: Graph returned no password after re-enabling; "
                            "run provision sync")
    new = new_entry.password.get_secret_value()
    if new == old:
        raise RotationError("enabled", "Meta returned the same password after the reset")
    try:
        store.put_many([credential_for(number.business_number, new, realm)], realm, "rotation")
    except StoreError as error:
        raise RotationError("enabled", f"new password fetched but the store write failed: {error}; "
                            "fix the store, then run provision sync (Graph returns the password "
                            "again)") from None
    result.steps.append("step 3: new password fetched; its HA1 pair written, the old one kept in history")
    result.new_password = new
    if before.srtp is not None and after.srtp != before.srtp:
        try:
            await client.update_settings(pnid, {"srtp_key_exchange_protocol": before.srtp})
        except GraphError as error:  # the new password is in the store: report, do not lose it
            result.problem = (f"srtp_key_exchange_protocol is {after.srtp or 'not set'} on Meta, was "
                              f"{before.srtp}; setting it back failed: {error.explain()}; run "
                              "provision apply")
            result.steps.append(result.problem)
            return result
        result.srtp_restored = True
        result.steps.append(f"srtp_key_exchange_protocol set back to {before.srtp}")
    return result


def _server_body(entry: ServerEntry) -> dict[str, Any]:
    body: dict[str, Any] = {"hostname": entry.hostname, "port": entry.port}
    if entry.request_uri_user_params:
        body["request_uri_user_params"] = dict(entry.request_uri_user_params)
    return body
