-- The pin repair (issue 16): content a mint uploaded while Pinata was down landed on Kubo only,
-- and is pinned to Pinata later by the repair schedule (activities/pin_repair.py).
--
-- held_confirmed_at: when the provider was seen holding the CID (the upload's answer, Pinata's
-- pinList, or the repair's own upload). record_pins writes a row for both providers before the
-- upload decides where the content lands, so a row alone does not say the provider holds it.
-- repair_checked_at: the repair's last try on the CID (it goes to the back of the queue).
-- Idempotent: IF NOT EXISTS / OR REPLACE throughout.
ALTER TABLE mint_pins ADD COLUMN IF NOT EXISTS held_confirmed_at timestamptz;
ALTER TABLE mint_pins ADD COLUMN IF NOT EXISTS repair_checked_at timestamptz;
-- The repair's candidates: unreleased Pinata rows nobody has seen Pinata hold.
CREATE INDEX IF NOT EXISTS mint_pins_pinata_unconfirmed ON mint_pins (pinned_at)
    WHERE provider = 'pinata' AND held_confirmed_at IS NULL AND released_at IS NULL;

-- One try of the repair's hold on a CID, in one statement (like mintsaga_record_pins,
-- migration 006): under the CID's pin lock (class 0x70696E73, "pins", the one record_pins and
-- release_pins take), 'claimed' when a release's live claim covers the CID (it may be unpinning
-- now), 'released' when no live or minted mint holds the CID at Pinata any more (compensated:
-- never pin it again), else 'held': the repair's own holder rows (mint_id p_holder, one per
-- provider, as record_pins writes a mint's) are inserted, or made live again. release_pins
-- counts a row whose mint_id has no mints row as a live holder, so while the repair holds the
-- CID no compensation claims its pins for unpinning; the repair gives the hold back with
-- release_pins(p_holder), which unpins the CID from both providers itself when no live holder
-- is left by then (the mint was compensated while the repair uploaded).
CREATE OR REPLACE FUNCTION mintsaga_pin_repair_hold(p_cid text, p_holder text)
RETURNS text
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(1885957747, hashtext(p_cid));
    IF EXISTS (SELECT 1 FROM mint_pins mp
               WHERE mp.cid = p_cid AND mp.unpin_claimed_until > clock_timestamp()) THEN
        RETURN 'claimed';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM mint_pins mp JOIN mints m ON m.mint_id = mp.mint_id
                   WHERE mp.cid = p_cid AND mp.provider = 'pinata' AND mp.released_at IS NULL
                     AND m.stage NOT IN ('ROLLED_BACK', 'FAILED')) THEN
        RETURN 'released';
    END IF;
    INSERT INTO mint_pins (mint_id, cid, provider)
    VALUES (p_holder, p_cid, 'pinata'), (p_holder, p_cid, 'kubo')
    ON CONFLICT (mint_id, cid, provider) DO UPDATE
        SET released_at = NULL, unpinned_at = NULL, pinned_at = now();
    RETURN 'held';
END
$$;
