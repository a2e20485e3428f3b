-- The hot wallet's spend, fleet-wide (issue 14): what each signed transaction may take from its
-- fee payer (rent + base fee + priority fee), reserved before signing. The spend breaker
-- (SOLANA_SPEND_LIMIT_SOL_PER_HOUR) sums the payer's last hour of this table; rows older than a
-- day are pruned by the reservations themselves.
CREATE TABLE wallet_spend (
    id          bigserial   PRIMARY KEY,
    payer       text        NOT NULL,
    mint_id     text        NOT NULL,
    lamports    bigint      NOT NULL CHECK (lamports >= 0),
    reserved_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX wallet_spend_payer_reserved_at ON wallet_spend (payer, reserved_at);
