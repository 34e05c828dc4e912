"""`provision status`: per number, what Meta has versus the site config and the store (drift).

The store comparison needs Meta's current password, so settings are read with credentials; the
password is only turned into HA1 digests and compared, never shown or kept.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from graphapi.client import GraphClient
from graphapi.errors import GraphError
from provisioning.credential_store import StoreError, credential_for
from provisioning.settings_model import (
    Difference,
    SettingsFormatError,
    codecs_difference,
    codecs_text,
    desired_settings,
    parse_settings,
    sip_differences,
    srtp_difference,
)
from provisioning.store_backend import CredentialBackend
from siteconfig.model import Number, SiteConfig


@dataclass
class NumberStatus:
    business_number: str
    phone_number_id: str
    sip_status: str = "?"
    server: dict[str, Any] | None = None
    srtp: str | None = None
    codecs: str = "?"  # what Meta offers: "OPUS", "OPUS + PCMU"... (audio.additional_codecs)
    other_apps: list[str] = field(default_factory=list)
    store: str = "?"  # matches | stale | missing | unknown
    drift: list[Difference] = field(default_factory=list)
    error: str = ""

    @property
    def in_sync(self) -> bool:
        return not self.error and not self.drift and self.store == "matches"

    def as_dict(self) -> dict[str, Any]:
        return {"business_number": self.business_number, "phone_number_id": self.phone_number_id,
                "sip_status": self.sip_status, "server": self.server, "srtp": self.srtp,
                "codecs": self.codecs, "other_apps": self.other_apps, "store": self.store,
                "drift": [d.as_dict() for d in self.drift], "error": self.error,
                "in_sync": self.in_sync}


async def number_status(client: GraphClient, cfg: SiteConfig, store: CredentialBackend, app_id: str,
                        number: Number) -> NumberStatus:
    status = NumberStatus(number.business_number, number.phone_number_id)
    try:
        current = parse_settings(await client.get_settings(number.phone_number_id, True))
    except (GraphError, SettingsFormatError) as error:
        status.error = error.explain() if isinstance(error, GraphError) else str(error)
        return status
    wanted = desired_settings(cfg, number)
    ours = current.server_for(app_id)
    status.sip_status = current.sip_status
    status.server = ours.public() if ours else None
    status.srtp = current.srtp
    status.codecs = codecs_text(current.effective_codecs)
    status.other_apps = sorted({s.app_id for s in current.other_apps(app_id)})
    status.drift = sip_differences(current, wanted, app_id)
    srtp = srtp_difference(current, wanted)
    if srtp is not None:
        status.drift.append(srtp)
    codecs = codecs_difference(current, wanted)
    if codecs is not None:
        status.drift.append(codecs)
    try:
        stored = store.get(number.business_number)
    except StoreError as error:
        status.store, status.error = "unknown", str(error)
        return status
    if ours is None or ours.password is None:
        status.store = "missing" if stored is None else "unknown"
    elif stored is None:
        status.store = "missing"
    else:
        expected = credential_for(number.business_number, ours.password.get_secret_value(),
                                  cfg.site.sip_domain)
        status.store = "matches" if expected == stored else "stale"
    return status
