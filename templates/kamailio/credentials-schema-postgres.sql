-- wa-sip credential store on PostgreSQL, for sites where several Kamailio edge nodes share one
-- store (db_postgres, Debian package kamailio-postgres-modules). Same tables and meaning as
-- credentials-schema.sql (SQLite): Kamailio's htable module loads `wa_creds`; provisioning
-- writes it in one transaction per batch, so a reader never sees half an update.
--   <digits>:ha1       MD5(digits:sip_domain:password)  checks Meta's digest on user-initiated calls
--   <digits>:ha1_meta  MD5(digits:wa.meta.vc:password)  answers Meta's 407 on business-initiated calls
--   <digits>:ha1_meta_sha256  SHA-256(digits:wa.meta.vc:password)  the same, for Meta's SHA-256
--                     challenge (offered first; the edge answers it when this key is there)
CREATE TABLE IF NOT EXISTS wa_creds (
    id SERIAL PRIMARY KEY,
    key_name VARCHAR(64) NOT NULL UNIQUE,
    key_type INTEGER NOT NULL DEFAULT 0,
    value_type INTEGER NOT NULL DEFAULT 0,
    key_value VARCHAR(128) NOT NULL DEFAULT '',
    expires INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE IF NOT EXISTS wa_credential_meta (
    business_number VARCHAR(16) PRIMARY KEY,
    realm VARCHAR(253) NOT NULL,
    meta_realm VARCHAR(253) NOT NULL,
    updated_at VARCHAR(32) NOT NULL
);

CREATE TABLE IF NOT EXISTS wa_credential_history (
    id SERIAL PRIMARY KEY,
    business_number VARCHAR(16) NOT NULL,
    ha1 VARCHAR(64) NOT NULL,
    ha1_meta VARCHAR(64) NOT NULL,
    retired_at VARCHAR(32) NOT NULL,
    reason VARCHAR(64) NOT NULL
);
