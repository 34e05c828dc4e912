"""`provision apply`: make Meta's calling settings match the site config, changing only what differs.

Three calls at most per number, each read back: the SIP part (status + this app's server), then
`srtp_key_exchange_protocol` on its own, because an integrator reports that a SIP settings update
resets SRTP to DTLS (after the SIP update the SRTP value is read again and set if it moved), then
`audio.additional_codecs` (the number's G.711 codecs Meta offers beside Opus; `[]` when the
number is back to Opus only), also last and on its own, so that neither earlier call can undo it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphapi.client import GraphClient
from graphapi.errors import GraphError
from provisioning.settings_model import (
    CallingSettings,
    DesiredSettings,
    Difference,
    SettingsFormatError,
    codecs_difference,
    codecs_text,
    desired_settings,
    other_apps_warning,
    parse_settings,
    sip_differences,
    srtp_difference,
)
from siteconfig.model import Number, SiteConfig


@dataclass
class NumberApply:
    """Plan and, unless dry run, result for one number."""

    business_number: str
    phone_number_id: str
    outcome: str = "error"  # unchanged | would_change | changed | error
    changes: list[Difference] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    detail: str = ""
    graph_error: GraphError | None = None

    def as_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "business_number": self.business_number, "phone_number_id": self.phone_number_id,
            "outcome": self.outcome, "changes": [c.as_dict() for c in self.changes],
            "warnings": self.warnings, "detail": self.detail}
        if self.graph_error is not None:
            entry["graph_error"] = self.graph_error.as_dict()
        return entry


class ApplyFailed(Exception):
    """Meta did not end up with the wanted settings (read-back mismatch)."""


async def read_settings(client: GraphClient, phone_number_id: str) -> CallingSettings:
    try:
        return parse_settings(await client.get_settings(phone_number_id))
    except SettingsFormatError as error:
        raise ApplyFailed(f"unexpected settings answer: {error}") from None


async def _apply_sip(client: GraphClient, number: Number, wanted: DesiredSettings,
                     app_id: str) -> CallingSettings:
    await client.update_settings(number.phone_number_id, {"sip": {
        "status": wanted.sip_status, "servers": [wanted.server_body()]}})
    after = await read_settings(client, number.phone_number_id)
    left = sip_differences(after, wanted, app_id)
    if left:
        raise ApplyFailed("Meta did not take the SIP settings: " +
                          ", ".join(f"{d.field} is {d.meta}" for d in left))
    return after


async def _apply_srtp(client: GraphClient, number: Number,
                      wanted: DesiredSettings) -> CallingSettings:
    await client.update_settings(number.phone_number_id, {"srtp_key_exchange_protocol": wanted.srtp})
    after = await read_settings(client, number.phone_number_id)
    if after.effective_srtp != wanted.srtp:
        raise ApplyFailed(f"Meta reads back srtp_key_exchange_protocol = {after.srtp}, not {wanted.srtp}")
    return after


async def _apply_codecs(client: GraphClient, number: Number, wanted: DesiredSettings) -> None:
    await client.update_settings(number.phone_number_id, wanted.audio_body())
    after = await read_settings(client, number.phone_number_id)
    if codecs_difference(after, wanted) is not None:
        raise ApplyFailed(f"Meta reads back audio.additional_codecs as "
                          f"{codecs_text(after.effective_codecs)}, not "
                          f"{codecs_text(wanted.additional_codecs)}")


async def apply_number(client: GraphClient, cfg: SiteConfig, app_id: str, number: Number,
                       dry_run: bool) -> NumberApply:
    """Diff one number and, unless `dry_run`, change what differs; never raises GraphError."""
    result = NumberApply(number.business_number, number.phone_number_id)
    step = ""  # the settings call under way, named in an error
    try:
        wanted = desired_settings(cfg, number)
        wanted.server_body()  # checks Meta's 128-character limits before anything is sent
        current = await read_settings(client, number.phone_number_id)
        others = current.other_apps(app_id)
        if others:
            result.warnings.append(other_apps_warning(number.business_number, others))
        sip_changes = sip_differences(current, wanted, app_id)
        srtp_change = srtp_difference(current, wanted)
        codecs_change = codecs_difference(current, wanted)
        result.changes = sip_changes + [c for c in (srtp_change, codecs_change) if c is not None]
        if not result.changes:
            result.outcome, result.detail = "unchanged", "Meta already matches the site config"
            return result
        if dry_run:
            result.outcome, result.detail = "would_change", "dry run: nothing sent"
            return result
        if sip_changes:
            step = "sip"
            current = await _apply_sip(client, number, wanted, app_id)
        if srtp_difference(current, wanted) is not None:
            step = "srtp_key_exchange_protocol"
            current = await _apply_srtp(client, number, wanted)
        if codecs_difference(current, wanted) is not None:
            step = "audio.additional_codecs"
            await _apply_codecs(client, number, wanted)
        result.outcome, result.detail = "changed", "applied and read back"
    except GraphError as error:
        where = f"setting {step}: " if step else ""
        result.outcome, result.detail, result.graph_error = "error", where + error.explain(), error
    except (ApplyFailed, ValueError) as error:
        result.outcome, result.detail = "error", str(error)
    return result
