-- release_pins in three short transactions, no connection held while it unpins (issue 14):
-- step 1 claims the pins it will unpin until unpin_claimed_until (a lease: record_pin waits
-- while a live claim covers its CID, and a claim whose worker died lapses by itself); step 3
-- records unpinned_at and gives the claim back. Idempotent: IF NOT EXISTS throughout.
ALTER TABLE mint_pins ADD COLUMN IF NOT EXISTS unpin_claimed_until timestamptz;
ALTER TABLE mint_pins ADD COLUMN IF NOT EXISTS unpinned_at timestamptz;
-- record_pin asks, for every pin, whether a claim covers the CID: the claimed rows are few.
CREATE INDEX IF NOT EXISTS mint_pins_unpin_claims ON mint_pins (cid)
    WHERE unpin_claimed_until IS NOT NULL;
