-- What clients/mint_store.py needs: the transaction's validity window, why a mint ended,
-- idempotent events, pin history, every signed submission, and one mint in progress per user.

ALTER TABLE mints
    ADD COLUMN last_valid_block_height bigint,
    ADD COLUMN blockhash               text,
    ADD COLUMN reason                  text;

-- One mint in progress per user, enforced by the database: a second claim is rejected at once
-- (unique violation), so two concurrent claims cannot both win. The stage list matches
-- clients.stages.NOT_IN_PROGRESS; MintStore.in_progress() repeats this predicate to use it.
CREATE UNIQUE INDEX mints_one_in_progress_per_user ON mints (user_id)
    WHERE stage NOT IN ('MINTED', 'ROLLED_BACK', 'FAILED');

-- The mint address is derived from mint_id: two mints with one address is a bug to stop.
CREATE UNIQUE INDEX mints_mint_address ON mints (mint_address) WHERE mint_address IS NOT NULL;

-- A retried activity carries the same event_key, so it appends its event only once.
-- Rows written before this migration have no key (NULLs do not collide).
ALTER TABLE mint_events ADD COLUMN event_key text;
CREATE UNIQUE INDEX mint_events_mint_id_event_key ON mint_events (mint_id, event_key);

-- Released pins stay as history; only unreleased pins of mints not rolled back count as held.
ALTER TABLE mint_pins ADD COLUMN released_at timestamptz;

-- Every signed mint transaction, recorded before its first send: a mint may be re-signed after
-- its blockhash expired, and each signature stays queryable (id gives the order).
CREATE TABLE mint_submissions (
    id                      bigserial   PRIMARY KEY,
    mint_id                 text        NOT NULL,
    signature               text        NOT NULL,
    last_valid_block_height bigint      NOT NULL,
    blockhash               text        NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    UNIQUE (mint_id, signature)
);
CREATE INDEX mint_submissions_signature ON mint_submissions (signature);
