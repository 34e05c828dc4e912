-- wa-sip credential store. Kamailio's htable module loads `wa_creds` (its own key/value layout);
-- provisioning writes it in one transaction so a reader never sees half an update.
--
-- Keys in wa_creds (one row each, key_type 0 = single value, value_type 0 = string):
--   <digits>:ha1       MD5(digits:sip_domain:password)  checks Meta's digest on user-initiated calls
--   <digits>:ha1_meta  MD5(digits:wa.meta.vc:password)  answers Meta's 407 on business-initiated calls
--   <digits>:ha1_meta_sha256  SHA-256(digits:wa.meta.vc:password)  the same, for Meta's SHA-256
--                     challenge (offered first; the edge answers it when this key is there)
-- <digits> is the business number without '+', the user name Meta uses. Plain passwords are not
-- stored: the HA1 pair keeps both call directions working.
CREATE TABLE IF NOT EXISTS wa_creds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key_name VARCHAR(64) NOT NULL UNIQUE,
    key_type INTEGER NOT NULL DEFAULT 0,
    value_type INTEGER NOT NULL DEFAULT 0,
    key_value VARCHAR(128) NOT NULL DEFAULT '',
    expires INTEGER NOT NULL DEFAULT 0
);

-- What provisioning knows about each number's credential; never read by Kamailio.
CREATE TABLE IF NOT EXISTS wa_credential_meta (
    business_number VARCHAR(16) PRIMARY KEY,
    realm VARCHAR(253) NOT NULL,
    meta_realm VARCHAR(253) NOT NULL,
    updated_at VARCHAR(32) NOT NULL
);

-- Old credentials kept before a rotation replaces them (same HA1 form, never plain text).
CREATE TABLE IF NOT EXISTS wa_credential_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    business_number VARCHAR(16) NOT NULL,
    ha1 VARCHAR(64) NOT NULL,
    ha1_meta VARCHAR(64) NOT NULL,
    retired_at VARCHAR(32) NOT NULL,
    reason VARCHAR(64) NOT NULL
);
