-- Collections (issue 18): a verified collection is a Token-2022 group mint (GroupPointer +
-- TokenGroup with a max size); each mint naming one joins it in its own transaction
-- (GroupMemberPointer + TokenGroupMember), so a mint is in its collection from its first slot.
--
-- collections: one row per operator key (`mintsaga collection create --key tier-gold`). The
-- address is derived from MINT_KEY_SEED and the key (solana/mint_keys.py), so creating it again
-- finds the same account and sends nothing. state: 'creating' until its transaction is
-- confirmed, then 'created'; only a created collection admits members.
CREATE TABLE IF NOT EXISTS collections (
    key              text        PRIMARY KEY,
    address          text        NOT NULL UNIQUE,
    name             text        NOT NULL,
    symbol           text        NOT NULL,
    uri              text        NOT NULL,
    max_size         bigint      NOT NULL CHECK (max_size > 0),
    group_authority  text        NOT NULL,
    update_authority text,
    state            text        NOT NULL DEFAULT 'creating'
                                 CHECK (state IN ('creating', 'created')),
    signature        text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- mints.collection: the key the request named. A mint holds one of its collection's slots from
-- its claim until it is rolled back (db/collections.py counts them under the collection row's
-- lock), so the members in flight never outnumber the max size and a full collection refuses
-- a mint before anything is pinned or sent.
ALTER TABLE mints ADD COLUMN IF NOT EXISTS collection text REFERENCES collections (key);
CREATE INDEX IF NOT EXISTS mints_collection ON mints (collection) WHERE collection IS NOT NULL;
