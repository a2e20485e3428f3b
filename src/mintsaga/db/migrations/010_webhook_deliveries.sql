-- Webhook deliveries (issue 17): each notice (mint_events row with a type) sent to each
-- configured endpoint (WEBHOOK_URL) until it is answered 2xx or given up. mintsaga.webhooks
-- dispatches them; db/webhook_deliveries.py says how rows move.
--
-- endpoint: the URL's endpoint_name (mintsaga.errors): no key, no query, never a secret; the
-- dispatcher maps it back to the configured URL. notice_id: mint_events.id, the notice's cursor
-- (webhook-id evt_<notice_id>). give_up_at: the notice's time plus a day (reset by
-- `mintsaga webhooks retry`). next_attempt_at: when it is due; a claim moves it on by a lease,
-- so a worker that dies mid-send leaves the delivery to be sent again (at least once).
CREATE TABLE IF NOT EXISTS webhook_deliveries (
    notice_id       bigint      NOT NULL,
    endpoint        text        NOT NULL,
    mint_id         text        NOT NULL,
    state           text        NOT NULL DEFAULT 'pending'
                                CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    give_up_at      timestamptz NOT NULL,
    last_attempt_at timestamptz,
    last_status     integer,
    last_error      text,
    delivered_at    timestamptz,
    PRIMARY KEY (notice_id, endpoint)
);
-- What is due, fleet-wide; and, per mint and endpoint, whether an earlier notice still waits
-- (a later one is held until it is delivered or given up: a receiver sees a mint in order).
CREATE INDEX IF NOT EXISTS webhook_deliveries_due
    ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_mint_pending
    ON webhook_deliveries (mint_id, endpoint, notice_id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS webhook_deliveries_state
    ON webhook_deliveries (state, created_at);

-- Per endpoint, the last notice (mint_events.id) already turned into deliveries: the cursor
-- the dispatcher reads the notice feed from (db/notices.py's visibility rule).
CREATE TABLE IF NOT EXISTS webhook_cursors (
    endpoint    text        PRIMARY KEY,
    after_id    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
