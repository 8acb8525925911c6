-- Console sessions ended by "Sign out" before their token expired. The session cookie is the
-- operator's bearer token, so a signed-out session is remembered by the token's sha256 until
-- the token's own expiry: every API process refuses it, across restarts, and no token is stored.
-- depends: 0010_downstream_commands

CREATE TABLE console_sign_outs (
    token_sha256  bytea PRIMARY KEY,
    expires_at    timestamptz NOT NULL,
    signed_out_at timestamptz NOT NULL DEFAULT now()
);
-- Expired rows are purged in small batches, oldest first.
CREATE INDEX console_sign_outs_expires_idx ON console_sign_outs (expires_at);
