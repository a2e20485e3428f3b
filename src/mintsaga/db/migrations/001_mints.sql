-- One row per mint request; mint_id is the idempotency key end to end.
CREATE TABLE mints (
    mint_id       text PRIMARY KEY,
    user_id       text        NOT NULL,
    wallet        text        NOT NULL,
    stage         text        NOT NULL,
    mint_address  text,
    image_cid     text,
    metadata_cid  text,
    signature     text,
    slot          bigint,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mints_user_id ON mints (user_id);

-- The story of each mint, stage by stage, appended and never rewritten.
CREATE TABLE mint_events (
    id       bigserial   PRIMARY KEY,
    mint_id  text        NOT NULL,
    stage    text        NOT NULL,
    detail   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX mint_events_mint_id ON mint_events (mint_id, id);

-- Which live mint holds which pin, so compensation unpins a CID only when nobody else does.
CREATE TABLE mint_pins (
    mint_id    text        NOT NULL,
    cid        text        NOT NULL,
    provider   text        NOT NULL,
    pinned_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (mint_id, cid, provider)
);
CREATE INDEX mint_pins_cid ON mint_pins (cid);
