"""Open the credential store named by `credentials.store`: SQLite file or PostgreSQL database.

Both stores hold the same thing, chosen so that no plain SIP password is ever written down:
per business number, HA1 = MD5(digits:realm:password) for the two realms in use, which is all
Kamailio needs in both call directions:
  - `<digits>:ha1`       realm = site.sip_domain: the edge checks Meta's digest on user-initiated calls;
  - `<digits>:ha1_meta`  realm = wa.meta.vc (MD5), `<digits>:ha1_meta_sha256` (SHA-256): the edge
    answers Meta's 407 on business-initiated calls with them (kemi/digest_answer.py).
Replaced pairs go to `wa_credential_history` (same HA1 form) so a rotation's old credential is kept.
The price: if the site's sip_domain changes, the passwords must be fetched again (`provision sync`
does that, since Graph returns the password on every GET with include_sip_credentials=true).
"""

from __future__ import annotations

from typing import Protocol

from provisioning.credential_store import Credential, WriteOutcome, open_store
from siteconfig.model import CredentialsSection


class CredentialBackend(Protocol):
    """What the provisioning commands need from a store."""

    def get(self, business_number: str) -> Credential | None: ...

    def put_many(self, credentials: list[Credential], realm: str,
                 reason: str = "sync") -> dict[str, WriteOutcome]: ...

    def history(self, business_number: str) -> list[tuple[str, str]]: ...

    def close(self) -> None: ...


def store_location(section: CredentialsSection) -> str:
    """Where the store is, fit for messages (no database password)."""
    if section.is_postgres:
        from provisioning.pg_store import redact_url
        return redact_url(section.store)
    return str(section.sqlite_path())


def open_credentials(section: CredentialsSection) -> CredentialBackend:
    """Open (creating tables if needed) the configured store; raises StoreError."""
    if section.is_postgres:
        from provisioning.pg_store import open_postgres_store  # psycopg only when it is used
        return open_postgres_store(section.store)
    return open_store(section.sqlite_path())
