-- The backend contract (issue 17): what a backend learns about its mint, recorded durably.
--
-- mints.status: where the mint stands for its backend (IN_PROGRESS, QUEUED, DELAYED,
-- AWAITING_OPERATOR, MINTED, ROLLED_BACK, FAILED), with when it got there and why
-- (status_detail: the step, the error, the cause of a delay). metadata_uri: the link the NFT
-- carries, so a purged mint's result can be answered from its row (idempotency forever).
ALTER TABLE mints ADD COLUMN IF NOT EXISTS status        text;
ALTER TABLE mints ADD COLUMN IF NOT EXISTS status_at     timestamptz;
ALTER TABLE mints ADD COLUMN IF NOT EXISTS status_detail jsonb;
ALTER TABLE mints ADD COLUMN IF NOT EXISTS metadata_uri  text;
CREATE INDEX IF NOT EXISTS mints_status_at ON mints (status, status_at);

-- mint_events.type: the notice a row publishes (mint.in_progress ... mint.failed, the webhook
-- and feed event type); NULL for the stage records the store keeps for itself.
-- mint_events.xid: the writing transaction, so the cursor feed (db/notices.py) serves a row
-- only once every transaction that could still commit a smaller id has ended: ids come from a
-- sequence, and transactions commit out of order. Rows written before this migration keep
-- NULL (they publish nothing); the default is set apart so the table is not rewritten.
ALTER TABLE mint_events ADD COLUMN IF NOT EXISTS type text;
ALTER TABLE mint_events ADD COLUMN IF NOT EXISTS xid  xid8;
ALTER TABLE mint_events ALTER COLUMN xid SET DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS mint_events_notices ON mint_events (id) WHERE type IS NOT NULL;

-- Admission control: mints waiting for a slot between claim and pivot (MINT_ADMISSION_LIMIT),
-- first come first served. A mint polls while it waits (polled_at); one whose workflow stopped
-- polling for two minutes (terminated) is dropped so it holds nobody up.
CREATE TABLE IF NOT EXISTS mint_admission_queue (
    mint_id    text        PRIMARY KEY,
    queued_at  timestamptz NOT NULL DEFAULT now(),
    polled_at  timestamptz NOT NULL DEFAULT now()
);
